#!/usr/bin/env bash
# `make browser` needs Chromium: Debian's package, which the browser tests launch through Playwright
# (tests/e2e/browser/), never a browser build that Playwright would download. Installs it when missing.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "==> installing Debian's chromium (apt-get)"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium fonts-liberation
command -v chromium >/dev/null
