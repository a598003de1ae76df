#!/usr/bin/env bash
# Builds what users `pip install` without a Rust toolchain: one wheel for every CPython >= 3.9
# (abi3) on Linux with glibc 2.17 or newer (manylinux2014), and the sdist. zig links the
# extension, so it does not take this machine's newer glibc; the kernels choose AVX-512, AVX2 or
# portable code at run time, so the one wheel serves every CPU of its architecture.
#   bash scripts/build_wheel.sh [OUT_DIR]        (default: dist/; TARGET=aarch64-unknown-linux-gnu
#                                                 cross-builds, after `rustup target add` of it)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist}

# The Python environment that runs maturin: $PYTHON, else the active venv, else ./.venv.
if [ -n "${PYTHON:-}" ]; then python=$PYTHON
elif [ -n "${VIRTUAL_ENV:-}" ]; then python=python
else [ -x .venv/bin/python ] || python3 -m venv .venv; python=.venv/bin/python
fi
"$python" -m pip install -q --disable-pip-version-check "maturin>=1.9.4,<2" "ziglang>=0.13" "auditwheel>=6"
# maturin runs zig as `python3 -m ziglang`: that environment's python3 first on the PATH.
PATH="$(dirname "$("$python" -c 'import sys; print(sys.executable)')"):$PATH"

# A target directory of its own: zig's linker flags would otherwise rebuild the tests' release build.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/wheel}
"$python" -m maturin build --release --zig --compatibility manylinux2014 ${TARGET:+--target "$TARGET"} --out "$out"
"$python" -m maturin sdist --out "$out"
# Says which glibc symbols the extension needs: the proof of the manylinux tag.
for wheel in "$out"/ferrolm-*manylinux2014*.whl; do "$python" -m auditwheel show "$wheel"; done
