#!/usr/bin/env bash
# Build llama.cpp's `llama-server` from the llama.cpp tree vendored in the
# `llama-cpp-python` sdist on PyPI (there is no Debian package and no PyPI wheel of the server).
#
# Usage: scripts/build_llama_server.sh [ENGINES_DIR]     (default: .engines at the repo root)
#   env LLAMA_CPP_PYTHON_VERSION (default 0.3.36), JOBS (default 2), PYTHON (default python3)
#
# Result: ENGINES_DIR/bin/llama-server (static, ~15 MB) and ENGINES_DIR/llama.cpp -> the source tree
# (its convert_hf_to_gguf.py and gguf-py are used by scripts/convert_tiny_gguf.py).
# Idempotent: does nothing if the binary exists and runs. ~5 min on 2 cores. Needs cmake and a C++ compiler.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENGINES="${1:-$ROOT/.engines}"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
JOBS="${JOBS:-2}"
PY="${PYTHON:-python3}"
BIN="$ENGINES/bin/llama-server"

if [[ -x "$BIN" ]] && "$BIN" --version >/dev/null 2>&1; then
    echo "llama-server already built: $BIN"
    "$BIN" --version 2>&1 | head -2
    exit 0
fi

for tool in cmake c++; do
    command -v "$tool" >/dev/null || { echo "error: $tool not found (apt-get install cmake g++)" >&2; exit 2; }
done

mkdir -p "$ENGINES/dl" "$ENGINES/src" "$ENGINES/bin"
SDIST="$ENGINES/dl/llama_cpp_python-$VERSION.tar.gz"
if [[ ! -f "$SDIST" ]]; then
    echo "downloading llama-cpp-python==$VERSION sdist"
    "$PY" -m pip download --disable-pip-version-check --no-deps --no-binary llama-cpp-python \
        "llama-cpp-python==$VERSION" -d "$ENGINES/dl"
fi
SRC="$ENGINES/src/llama_cpp_python-$VERSION"
if [[ ! -d "$SRC" ]]; then
    tar -xzf "$SDIST" -C "$ENGINES/src"
fi
L="$SRC/vendor/llama.cpp"
[[ -f "$L/CMakeLists.txt" ]] || { echo "error: no llama.cpp tree at $L" >&2; exit 1; }

# Offline build: no curl/openssl (the server never downloads models here), no tests/examples.
cmake -S "$L" -B "$L/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=OFF
nice -n 10 cmake --build "$L/build" --target llama-server -j "$JOBS"

cp "$L/build/bin/llama-server" "$BIN"
ln -sfn "$L" "$ENGINES/llama.cpp"
"$BIN" --version 2>&1 | head -2
echo "ok: $BIN"
