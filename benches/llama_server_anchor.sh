#!/usr/bin/env bash
# Prepares the two HTTP anchors of the serving bench, once, under
# benches/.anchor/, and prints the path of what was asked for:
#
#   llama_server_anchor.sh llama-server   # llama.cpp's own server (continuous batching)
#   llama_server_anchor.sh python         # llama-cpp-python's OpenAI server (python with [server])
#
# Both come from llama-cpp-python 0.3.36: the Python server is that package
# with its `server` extra (in the venv benches/llama_cpp_anchor.sh builds),
# and llama-server is built with cmake from the same sdist's vendor/llama.cpp.
# Build flags follow benches/llama_cpp_anchor.sh: native, but no AMX (its AMX
# path segfaults here) and no OpenMP (it flatters neither side).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
anchor="$here/.anchor"
venv="$anchor/venv"
noamx='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'

ensure_venv() {
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import llama_cpp' 2>/dev/null; then
    echo "anchor: building llama-cpp-python 0.3.36 (several minutes, once)" >&2
    python3 -m venv "$venv"
    CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_OPENMP=OFF -DCMAKE_C_FLAGS='$noamx' -DCMAKE_CXX_FLAGS='$noamx'" \
      "$venv/bin/pip" install --quiet --no-cache-dir llama-cpp-python==0.3.36 >&2
  fi
}

case "${1:-}" in
  python)
    ensure_venv
    if ! "$venv/bin/python" -c 'import llama_cpp.server.app, uvicorn' 2>/dev/null; then
      echo "anchor: installing llama-cpp-python's server extra" >&2
      # The extra's own dependencies only: the package itself is already built.
      "$venv/bin/pip" install --quiet 'uvicorn>=0.22.0' 'fastapi>=0.100.0' 'pydantic-settings>=2.0.1' \
        'sse-starlette>=1.6.1' 'starlette-context>=0.3.6,<0.4' 'PyYAML>=5.1' >&2
    fi
    echo "$venv/bin/python"
    ;;
  llama-server)
    bin="$anchor/llama-server/bin/llama-server"
    if [ ! -x "$bin" ]; then
      ensure_venv
      echo "anchor: building llama-server from the llama-cpp-python 0.3.36 sdist (several minutes, once)" >&2
      "$venv/bin/pip" install --quiet cmake >&2
      src="$anchor/llama-server/src"
      rm -rf "$src" && mkdir -p "$src"
      "$venv/bin/pip" download --quiet --no-deps --no-binary llama-cpp-python \
        llama-cpp-python==0.3.36 -d "$src" >&2
      tar -xzf "$src"/llama_cpp_python-0.3.36.tar.gz -C "$src"
      llama="$src/llama_cpp_python-0.3.36/vendor/llama.cpp"
      "$venv/bin/cmake" -S "$llama" -B "$src/build" -DCMAKE_BUILD_TYPE=Release \
        -DGGML_NATIVE=ON -DGGML_OPENMP=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF \
        -DCMAKE_C_FLAGS="$noamx" -DCMAKE_CXX_FLAGS="$noamx" >&2
      "$venv/bin/cmake" --build "$src/build" --target llama-server -j "$(nproc)" >&2
      mkdir -p "$(dirname "$bin")"
      cp "$src/build/bin/llama-server" "$bin"
    fi
    echo "$bin"
    ;;
  *)
    echo "usage: $0 python|llama-server" >&2
    exit 2
    ;;
esac
