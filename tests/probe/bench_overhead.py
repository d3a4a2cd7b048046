"""Probe overhead on a SASRec-sized model (B=64, L=50, d=64, 2 blocks) and memory over 10k calls.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python -m tests.probe.bench_overhead`` (not collected by pytest).
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from nanprobe.probe import Probe
from tests.probe.models import SASRec


def _cpu_time(fn, number: int) -> float:
    t0 = time.process_time()
    for _ in range(number):
        fn()
    return (time.process_time() - t0) / number


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["eval", "train"], default="eval")
    ap.add_argument("--calls", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--number", type=int, default=10)
    a = ap.parse_args()
    torch.manual_seed(0)
    model = SASRec().train(a.mode == "train")
    seq = torch.randint(1, 1001, (64, 50))
    probe = Probe(model)
    bare, probed = [], []
    with torch.no_grad():
        for _ in range(a.repeat):  # interleaved, CPU time, best of: robust on a shared machine
            bare.append(_cpu_time(lambda: model(seq), a.number))
            with probe:
                probed.append(_cpu_time(lambda: model(seq), a.number))
    b, p = min(bare), min(probed)
    print(f"mode={a.mode} bare={b * 1e3:.2f} ms probed={p * 1e3:.2f} ms ratio={p / b:.2f} "
          f"(CPU time per forward, best of {a.repeat}x{a.number}; {probe.result().calls} calls probed)")
    lin = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
    x = torch.randn(2, 4)
    with torch.no_grad(), Probe(lin, ring_size=256) as probe:
        for _ in range(200):
            lin(x)
        before = _rss_mb()
        for _ in range(a.calls):
            lin(x)
        after = _rss_mb()
        res = probe.result()
    print(f"{a.calls} calls: records kept={len(res.records)} rss before={before:.1f} MB after={after:.1f} MB")


if __name__ == "__main__":
    main()
