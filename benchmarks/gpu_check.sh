#!/usr/bin/env bash
# For a CUDA machine only (never needed for CI): the overhead table on the GPU and the sentinel's host-sync
# count. Prepared to run as one short script within 5 minutes:
#   timeout 300 bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
"$PY" benchmarks/sync_check.py --steps 50
timeout 200 "$PY" benchmarks/overhead.py --device cuda --only overhead --json "$OUT/overhead_cuda.json"
