"""On CUDA: count host syncs per step, bare vs under the sentinel monitor, with torch.cuda.set_sync_debug_mode.

The sentinel may add at most one host sync per step (its finiteness check). Exit 1 if it adds more.
    python benchmarks/sync_check.py [--steps 50]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.workloads import Workload, all_workloads
from nanprobe.batches import call_model, to_device
from nanprobe.monitoring import monitor


def syncs_per_step(w: Workload, steps: int, monitored: bool) -> float:
    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ctx = monitor(w.model, out_dir=out, on_nonfinite="warn") if monitored else None
        if ctx is not None:
            ctx.__enter__()
        try:
            torch.cuda.set_sync_debug_mode("warn")
            with torch.no_grad():
                for _ in range(steps):
                    call_model(w.model, w.batch)
            torch.cuda.set_sync_debug_mode("default")
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)
    return sum("synchroniz" in str(c.message) for c in caught) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("sync_check: no CUDA device; nothing to check")
        return 0
    worst = 0.0
    for w in all_workloads():
        w.model.to("cuda").eval()
        w.batch = to_device(w.batch, "cuda")
        bare, mon = syncs_per_step(w, args.steps, False), syncs_per_step(w, args.steps, True)
        worst = max(worst, mon - bare)
        print(f"{w.name:22s} eval: host syncs per step bare {bare:.2f}, sentinel {mon:.2f} (+{mon - bare:.2f})")
    print(f"sentinel adds at most {worst:.2f} host sync(s) per step (target <= 1)")
    return 0 if worst <= 1.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
