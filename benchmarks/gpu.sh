#!/usr/bin/env bash
# The GPU table in one call (issue 13): benchmarks/gpu_step.py's figures into $1
# (default $OUT, the device tool's result folder). Tried on CPU at tiny sizes with
#   bash benchmarks/gpu.sh /tmp/gpu_smoke --frames 8 --size 32 --batches 2 --flow-size 32x40 --flow-pairs 2 --repeats 2
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:?give a folder or set OUT}}"
shift || true
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt" 2>/dev/null || true
python -c "import jax, torch; print('jax', jax.__version__, jax.devices()); print('torch', torch.__version__)" \
    > "$out/versions.txt" 2>&1 || true
timeout 420 python -m benchmarks.gpu_step --json "$out/gpu.json" "$@" 2> "$out/gpu_step.log"
