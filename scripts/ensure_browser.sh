#!/usr/bin/env bash
# CI's machine set-up (.ci/run): make sure headless Chromium and its driver are there for the
# browser test (pytest -m browser: TensorBoard opened in a real browser). `make test` never calls
# it: a test command must not install system packages.
#
# Installs Debian's chromium and chromium-driver with apt-get when either is missing and this runs
# as root on a machine with apt-get; otherwise it changes nothing and exits 0 (the browser tests
# then skip, saying why). Debian builds both from one source package, so their versions match
# and nothing is downloaded at test time.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure_browser: chromium/chromedriver missing and not root: the browser tests will skip" \
        "(install them with: sudo apt-get install chromium chromium-driver)" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_browser: chromium/chromedriver missing and no apt-get here:" \
        "the browser tests will skip" >&2
    exit 0
fi

echo "ensure_browser: installing chromium and chromium-driver with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium chromium-driver >/dev/null
echo "ensure_browser: $(chromium --version 2>/dev/null) and $(chromedriver --version 2>/dev/null | cut -d" " -f1-2)" >&2
