#!/usr/bin/env bash
# Redis and Webdis (Redis over HTTP) for the e2e tests of the cluster-wide stores.
set -euo pipefail
command -v redis-server >/dev/null && command -v webdis >/dev/null && exit 0
echo "installing redis-server and webdis (Debian packages)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends redis-server webdis >/dev/null
