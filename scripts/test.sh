#!/usr/bin/env bash
# Builds ferrolm (release) into ./.venv and runs every test: Rust (cargo test) and Python (pytest).
# Works on a fresh machine: it creates the venv and installs the build and test dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null 2>&1 || { echo "scripts/test.sh: needs a Rust toolchain (rustup: https://rustup.rs)" >&2; exit 1; }

# The labelling page's browser tests drive Debian's Chromium (Playwright's own browser
# download is not used: it needs a CDN). A no-op when chromium is already installed; where it
# cannot be installed (no apt, no root or password-free sudo) those tests are skipped, as said.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo="none"; fi
    if [ "$sudo" != none ] && command -v apt-get >/dev/null 2>&1; then
        $sudo apt-get update -q && $sudo apt-get install -y -q chromium ||
            echo "scripts/test.sh: installing chromium failed: the labelling page's browser tests are skipped" >&2
    else
        echo "scripts/test.sh: chromium is missing and cannot be installed here: the labelling page's browser tests are skipped" >&2
    fi
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --disable-pip-version-check "maturin>=1.9.4,<2"
maturin develop --release --extras test -q

cargo test --release -p ferrolm
python -m pytest -q "$@"
