#!/usr/bin/env bash
# GPU bench in two halves, because the GPU host has neither cargo nor network:
#
#   benches/gpu.sh build   # where cargo is: CUDA release build of `starling`
#                          # and the GPU bench binary, into target/gpu/
#   benches/gpu.sh run     # on the GPU host, from the repository root, with
#                          # target/gpu/ and models/cache/ copied there
#
# `run` starts the server on the fetched model with --device cuda and prints:
# the device the engine really got, GPU memory, single-stream tok/s,
# aggregate tok/s and TTFT at 1/8/32/64 concurrent, the greedy fixture check
# against llama.cpp on CUDA, and the Whisper RTF (none yet). See benches/gpu.rs.
#
# Environment: CUDA_COMPUTE_CAP (build; default 90 = H100/H200, 80 = A100),
# STARLING_MODELS_DIR (run; default models/cache), CUDA_LIBS (run; a folder
# with the CUDA 13 runtime libraries if the host's are elsewhere or older),
# STARLING_BENCH_DEVICE (run; default cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/gpu

build() {
  eval "$(scripts/cuda-toolchain)"
  cargo build --release --locked --features cuda --bin starling --target-dir target/cuda
  local bench
  bench=$(cargo bench --locked -p starling-benches --bench gpu --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "gpu" and m.get("executable"):
        print(m["executable"])')
  [ -n "$bench" ] || { echo "gpu.sh: the gpu bench did not build" >&2; exit 1; }
  mkdir -p "$out"
  # Without debug info the two binaries are small enough to copy around.
  objcopy --strip-debug target/cuda/release/starling "$out/starling"
  objcopy --strip-debug "$bench" "$out/gpu-bench"
  ls -la "$out"
  echo "gpu.sh: built for compute capability $CUDA_COMPUTE_CAP; copy $out/ and models/cache/ to the GPU host and run: benches/gpu.sh run"
}

run() {
  [ -x "$out/starling" ] && [ -x "$out/gpu-bench" ] || { echo "gpu.sh: $out/ is missing: run 'benches/gpu.sh build' where cargo is" >&2; exit 1; }
  nvidia-smi -L || echo "gpu.sh: nvidia-smi found no GPU; the bench will say where it ran" >&2
  # The binary links the CUDA 13 runtime libraries: find them if the loader cannot.
  local dirs=${CUDA_LIBS:-}
  for d in /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/local/cuda/targets/x86_64-linux/lib .venv-cuda/lib/python3*/site-packages/nvidia/cu13/lib; do
    [ -d "$d" ] && dirs=${dirs:+$dirs:}$d
  done
  export LD_LIBRARY_PATH=${dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  local missing
  missing=$(ldd "$out/starling" | awk '/not found/ {print $1}' | tr '\n' ' ')
  if [ -n "$missing" ]; then
    echo "gpu.sh: libraries not found: $missing(set CUDA_LIBS to a folder with the CUDA 13 runtime; libcuda.so.1 comes with the driver)" >&2
    exit 1
  fi
  STARLING_BIN=$out/starling "$out/gpu-bench"
}

case ${1:-} in
  build) build ;;
  run) run ;;
  *) echo "usage: benches/gpu.sh build|run" >&2; exit 2 ;;
esac
