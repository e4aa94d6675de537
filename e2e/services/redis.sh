#!/usr/bin/env bash
# Redis and Webdis (Debian packages), for the e2e tests that share state across Envoys through
# Redis over HTTP. The tests start their own instances on free loopback ports.
set -euo pipefail
command -v redis-server >/dev/null && command -v webdis >/dev/null && exit 0
echo "installing redis-server and webdis (Debian packages)"
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y --no-install-recommends redis-server webdis >/dev/null \
  || { $sudo apt-get update -qq && $sudo apt-get install -y --no-install-recommends redis-server webdis >/dev/null; }
