#!/usr/bin/env bash
# Builds llama-cpp-python 0.3.36 (the benchmark anchor) into a throwaway venv
# at benches/.anchor/venv, once, and runs benches/llama_cpp_anchor.py with it.
#
# Build flags, measured on the dev box (see issue "Local LLM engine"):
# - GGML_NATIVE=ON but AMX disabled: a native build segfaults in its AMX path
#   on the first decode on CPUs that have AMX.
# - GGML_OPENMP=OFF: with OpenMP, calls from a thread other than the first
#   run ~3x slower, which would flatter Starling.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv="$here/.anchor/venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import llama_cpp' 2>/dev/null; then
  echo "anchor: building llama-cpp-python 0.3.36 (several minutes, once)" >&2
  python3 -m venv "$venv"
  noamx='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'
  CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_OPENMP=OFF -DCMAKE_C_FLAGS='$noamx' -DCMAKE_CXX_FLAGS='$noamx'" \
    "$venv/bin/pip" install --quiet --no-cache-dir llama-cpp-python==0.3.36 >&2
fi
exec "$venv/bin/python" "$here/llama_cpp_anchor.py" "$@"
