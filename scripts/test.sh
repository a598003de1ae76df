#!/usr/bin/env bash
# Builds ferrolm (release) into ./.venv and runs every test: Rust (cargo test) and Python (pytest).
# Works on a fresh machine: it creates the venv and installs the build and test dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

# The labelling page's browser tests drive Debian's Chromium (Playwright's own browser
# download is not used: it needs a CDN). A no-op when chromium is already installed.
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -q && $sudo apt-get install -y -q chromium
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
pip install -q --disable-pip-version-check "maturin>=1.9.4,<2"
maturin develop --release --extras test -q

cargo test --release -p ferrolm
python -m pytest -q "$@"
