#!/usr/bin/env bash
# Installs the browser the review page's end-to-end test drives: Debian's chromium (the
# Playwright package's own browser download is not used). Idempotent: does nothing when
# /usr/bin/chromium is there. Needs root (or sudo) and Debian's package sources.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium
test -x /usr/bin/chromium
