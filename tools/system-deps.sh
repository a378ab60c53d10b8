#!/usr/bin/env bash
# Install the Debian packages the tests need that are not Python packages: headless Chromium, which
# renders report.html in the report test. Only when missing; needs root (CI and these machines are).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "system-deps: chromium is missing; install it (apt-get install chromium) or the report test is skipped" >&2
  exit 0
fi
echo "system-deps: installing chromium (report rendering test)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
