#!/usr/bin/env bash
# For a CUDA machine only (never needed for CI): the overhead table on the GPU, the sentinel's host-sync
# count, and the scale benchmark on the GPU (GPT-2-sized models: baseline forward vs `nanprobe trace --device
# cuda`, wall, peak RSS and peak torch.cuda.max_memory_allocated of each). Prepared to run as one short script
# within 10 minutes:
#   timeout 600 bash benchmarks/gpu_check.sh
#   ONLY=scale timeout 420 bash benchmarks/gpu_check.sh     # the scale benchmark alone
# Writes $OUT/overhead_cuda.json, $OUT/scale_cuda.json and $OUT/scale_cuda.png (OUT defaults to
# benchmarks/results), and the children's logs and reports under $OUT/scale_cases. Needs torch with CUDA,
# transformers and matplotlib.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
ONLY=${ONLY:-all}
THREADS=${THREADS:-8}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
"$PY" -c "import torch, transformers; assert torch.cuda.is_available(), 'no CUDA device'; \
print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'transformers', transformers.__version__)"
if [[ $ONLY == all || $ONLY == overhead ]]; then
  "$PY" benchmarks/sync_check.py --steps 50
  timeout 200 "$PY" benchmarks/overhead.py --device cuda --only overhead --json "$OUT/overhead_cuda.json"
fi
if [[ $ONLY == all || $ONLY == scale ]]; then
  # Fresh processes per measurement; the children record torch.cuda.max_memory_allocated themselves.
  timeout 360 "$PY" benchmarks/scale.py --device cuda --threads "$THREADS" --out "$OUT" --train-rounds 5 \
    --cases "$OUT/scale_cases"  # logs and nanprobe reports; the checkpoints are deleted after each size
fi
