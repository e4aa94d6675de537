#!/bin/sh
# Installs the peer gateways `make bench` compares against into .bench/ (once; quiet when done):
# the LiteLLM proxy from PyPI in its own virtualenv, the Portkey gateway from npm.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
dir="$root/.bench"
mkdir -p "$dir"

LITELLM_VERSION=1.106.12
if [ ! -x "$dir/litellm/bin/litellm" ] || ! "$dir/litellm/bin/pip" show litellm 2>/dev/null | grep -qx "Version: $LITELLM_VERSION"; then
  echo "installing LiteLLM proxy $LITELLM_VERSION into .bench/litellm (once)"
  python3 -m venv "$dir/litellm"
  "$dir/litellm/bin/pip" install --quiet --disable-pip-version-check "litellm[proxy]==$LITELLM_VERSION"
fi

PORTKEY_VERSION=1.15.2
if [ ! -f "$dir/portkey/node_modules/@portkey-ai/gateway/build/start-server.js" ] \
   || ! grep -q "\"version\": \"$PORTKEY_VERSION\"" "$dir/portkey/node_modules/@portkey-ai/gateway/package.json"; then
  echo "installing Portkey gateway $PORTKEY_VERSION into .bench/portkey (once)"
  mkdir -p "$dir/portkey"
  # Its streaming fails with "TypeError: immutable" on newer @hono/node-server.
  cat > "$dir/portkey/package.json" <<JSON
{"private": true,
 "dependencies": {"@portkey-ai/gateway": "$PORTKEY_VERSION"},
 "overrides": {"@hono/node-server": "1.14.1"}}
JSON
  (cd "$dir/portkey" && npm install --silent --no-audit --no-fund >/dev/null)
fi
