#!/usr/bin/env bash
# Builds what users `pip install` without a Rust toolchain: one wheel for every CPython >= 3.9
# (abi3) on Linux with glibc 2.17 or newer (manylinux2014), and the sdist. zig links the
# extension, so it does not take this machine's newer glibc; the kernels choose AVX-512, AVX2 or
# portable code at run time, so the one wheel serves every CPU of its architecture.
#   bash scripts/build_wheel.sh [OUT_DIR]     (default: dist/) prints the wheel's path last.
#   WHEEL_TARGET=aarch64-unknown-linux-gnu    cross-builds for ARM (after `rustup target add` of it).
# The build tools go into the active venv, else ./.venv (made by $PYTHON, as scripts/test.sh makes it).
set -euo pipefail
out=$(realpath -m "${1:-dist}")  # before the cd: relative to where the script was run
cd "$(dirname "$0")/.."

if [ -n "${VIRTUAL_ENV:-}" ]; then python=$VIRTUAL_ENV/bin/python
else [ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv; python=$PWD/.venv/bin/python
fi
"$python" -m pip install -q --disable-pip-version-check "maturin>=1.9.4,<2" "ziglang>=0.13" "auditwheel>=6"

# maturin links through cargo-zigbuild, which runs zig as `python -m ziglang` with this interpreter.
export CARGO_ZIGBUILD_PYTHON_PATH=$python
# A portable wheel is compiled for the baseline CPU: no inherited `-C target-cpu=native`.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS
# A target directory of its own: zig's linker flags would otherwise rebuild the tests' release build.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}/wheel

mkdir -p "$out"
marker=$(mktemp) && trap 'rm -f "$marker"' EXIT
"$python" -m maturin build --release --zig --compatibility manylinux2014 ${WHEEL_TARGET:+--target "$WHEEL_TARGET"} \
    --out "$out"
"$python" -m maturin sdist --out "$out"
# The wheel just built (the directory may hold others): auditwheel says which glibc symbols it
# needs, the proof of its manylinux tag.
wheel=$(find "$out" -maxdepth 1 -name 'ferrolm-*.whl' -newer "$marker" | head -n 1)
"$python" -m auditwheel show "$wheel"
echo "$wheel"
