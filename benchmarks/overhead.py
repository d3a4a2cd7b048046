"""How much does nanprobe cost? Times each workload bare, under the sentinel monitor, under the full per-layer
probe, and under the tools people use today, interleaved in one process; then scaling with depth and width,
the cost of a diagnosis, and memory over 10,000 monitored steps.

    python benchmarks/overhead.py --json benchmarks/results/overhead.json
    python benchmarks/overhead.py --quick          # < 1 minute, for smoke tests
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import Variant, time_interleaved
from benchmarks.workloads import Workload, all_workloads, gpt_workload
from nanprobe.batches import call_model, to_device
from nanprobe.monitoring import monitor
from nanprobe.probe import Probe

RESULTS = Path(__file__).resolve().parent / "results"


# -- instrumentation variants ------------------------------------------------------------------------
@contextlib.contextmanager
def isfinite_hooks(model: nn.Module) -> Iterator[None]:
    """The hand-rolled baseline: a forward hook on every module doing ``isfinite().all().item()``."""

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        for t in out if isinstance(out, tuple) else (out,):
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all().item():
                raise FloatingPointError("non-finite")

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def debug_underflow_overflow(w: Workload) -> nn.Module | None:
    """A copy of the model under Hugging Face's DebugUnderflowOverflow (its hooks cannot be removed)."""
    try:
        from transformers.debug_utils import DebugUnderflowOverflow
    except ImportError:
        return None
    twin = copy.deepcopy(w.model)
    if w.float_twin is not None:
        w.float_twin(twin)
    DebugUnderflowOverflow(twin)
    return twin


@contextlib.contextmanager
def sentinel(model: nn.Module, out_dir: str, methods: tuple[str, ...] = ()) -> Iterator[None]:
    with monitor(model, out_dir=out_dir, on_nonfinite="warn", methods=methods):
        yield


def eval_step(model: nn.Module, batch: Any) -> Callable[[], object]:
    def step() -> object:
        with torch.no_grad():
            return call_model(model, batch)

    return step


def train_step(model: nn.Module, batch: Any, w: Workload) -> Callable[[], object]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)

    def step() -> object:
        opt.zero_grad(set_to_none=True)
        value = w.training_loss(model, batch)
        value.backward()
        opt.step()
        return value

    return step


def signals_train_step(model: nn.Module, batch: Any, w: Workload, held: dict[str, Any]) -> Callable[[], object]:
    """The training step as the README writes it under the monitor: the loss checked, the gradients checked
    (norms into the history), the optimizer known (learning rate, update ratio), early warning on."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    held["opt"] = opt

    def step() -> object:
        mon = held["mon"]
        opt.zero_grad(set_to_none=True)
        value = mon.check_loss(w.training_loss(model, batch))
        value.backward()
        mon.after_backward()
        opt.step()
        mon.step()
        return value

    return step


@contextlib.contextmanager
def sentinel_with_signals(model: nn.Module, out_dir: str, held: dict[str, Any],
                          methods: tuple[str, ...] = ()) -> Iterator[None]:
    with monitor(model, out_dir=out_dir, on_nonfinite="warn", optimizer=held["opt"], methods=methods) as mon:
        held["mon"] = mon
        yield


def variants_for(w: Workload, phase: str, out_dir: str) -> list[Variant]:
    model = w.model
    model.train(phase == "train")
    make = (lambda m, b: eval_step(m, b)) if phase == "eval" else (lambda m, b: train_step(m, b, w))
    found = [
        Variant("bare", make(model, w.batch)),
        Variant("nanprobe sentinel", make(model, w.batch), lambda: sentinel(model, out_dir, w.methods)),
        Variant("nanprobe probe", make(model, w.batch), lambda: Probe(model)),
        Variant("isfinite hooks", make(model, w.batch), lambda: isfinite_hooks(model)),
    ]
    twin = debug_underflow_overflow(w)
    if twin is not None:
        twin.train(phase == "train")
        found.append(Variant("DebugUnderflowOverflow", make(twin, w.float_batch or w.batch)))
    if phase == "train":
        held: dict[str, Any] = {}
        found.insert(2, Variant("nanprobe sentinel + history", signals_train_step(model, w.batch, w, held),
                                lambda: sentinel_with_signals(model, out_dir, held, w.methods)))
        found.append(Variant("detect_anomaly", make(model, w.batch),
                             lambda: torch.autograd.detect_anomaly(check_nan=True)))
    return found


def on_device(w: Workload, device: str) -> Workload:
    if device != "cpu":
        w.model.to(device)
        w.batch = to_device(w.batch, device)
        if w.float_batch is not None:
            w.float_batch = to_device(w.float_batch, device)
    return w


def overhead_table(quick: bool, device: str = "cpu") -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    rounds, steps = (3, 2) if quick else (15, 10)
    with tempfile.TemporaryDirectory() as out_dir:
        for w in (on_device(w, device) for w in all_workloads(quick=quick)):
            for phase in ("eval", "train"):
                timings = time_interleaved(variants_for(w, phase, out_dir), rounds=rounds, steps=steps,
                                           warmup=1 if quick else 3)
                bare = timings["bare"].median
                for name, t in timings.items():
                    rows.append({"workload": w.name, "phase": phase, "variant": name,
                                 "ms": round(t.median * 1e3, 3), "ratio": round(t.median / bare, 3)})
    return rows


# -- scaling --------------------------------------------------------------------------------------------
def scaling(quick: bool) -> list[dict[str, Any]]:
    depths = (2, 6) if quick else (2, 4, 8, 12, 16, 24)
    widths = (32, 64) if quick else (32, 64, 128, 256)
    rounds, steps = (3, 2) if quick else (9, 5)
    rows = []
    for label, configs in (("depth", [(d, 64) for d in depths]), ("width", [(4, w) for w in widths])):
        for layers, d in configs:
            w = gpt_workload(batch=8 if quick else 16, ctx=32 if quick else 64, layers=layers, d=d)
            w.model.eval()
            step = eval_step(w.model, w.batch)
            t = time_interleaved([Variant("bare", step), Variant("probe", step, lambda m=w.model: Probe(m))],
                                 rounds=rounds, steps=steps, warmup=1)
            rows.append({"axis": label, "layers": layers, "width": d,
                         "modules": sum(1 for _ in w.model.modules()),
                         "bare_ms": round(t["bare"].median * 1e3, 3),
                         "ratio": round(t["probe"].median / t["bare"].median, 3)})
    return rows


def plot_scaling(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, axis, key in ((axes[0], "depth", "layers"), (axes[1], "width", "width")):
        sel = [r for r in rows if r["axis"] == axis]
        ax.plot([r[key] for r in sel], [r["ratio"] for r in sel], marker="o")
        ax.axhline(1.5, color="grey", linestyle="--", linewidth=1, label="target 1.5x")
        ax.set_xlabel("decoder blocks" if axis == "depth" else "hidden width (4 blocks)")
        ax.set_ylabel("full probe / bare (eval)")
        ax.legend()
    fig.suptitle("nanprobe full per-layer probe overhead, GPT-style decoder, CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- diagnosis cost -------------------------------------------------------------------------------------
class LeftPaddedAttention(nn.Module):
    """Self-attention with left padding + key_padding_mask + causal mask: fully masked rows in eval."""

    def __init__(self, d: int = 32) -> None:
        super().__init__()
        self.emb = nn.Embedding(100, d, padding_idx=0)
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True)
        self.attn2 = nn.MultiheadAttention(d, 2, batch_first=True)
        self.out = nn.Linear(d, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)  # (B, L, D)
        pad = ids == 0
        causal = torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool).triu(1)
        x = self.attn(x, x, x, key_padding_mask=pad, attn_mask=causal, need_weights=False)[0]
        x = self.attn2(x, x, x, key_padding_mask=pad, attn_mask=causal, need_weights=False)[0]
        return self.out(x[:, -1])


def diagnosis_cost(quick: bool) -> list[dict[str, Any]]:
    from nanprobe.diagnosis import diagnose

    rows = []
    for b in (8, 64) if quick else (8, 64, 512):
        torch.manual_seed(0)
        model = LeftPaddedAttention().eval()
        ids = torch.randint(1, 100, (b, 20))
        for i in range(0, b, max(1, b // 4)):  # a quarter of the users have short histories
            ids[i, :8] = 0
        start = time.perf_counter()
        d = diagnose(model, [ids])
        rows.append({"B": b, "forward_passes": d.forward_passes, "budget": int(2 * math.log2(b) + 12),
                     "seconds": round(time.perf_counter() - start, 3),
                     "cause": (d.verdict or {}).get("cause")})
    return rows


# -- memory ---------------------------------------------------------------------------------------------
def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def memory(quick: bool) -> dict[str, Any]:
    steps = 500 if quick else 10_000
    torch.manual_seed(0)
    model = gpt_workload(batch=4, ctx=16, layers=2, d=32).model.eval()
    idx = torch.randint(0, 512, (4, 16))
    marks = []
    with tempfile.TemporaryDirectory() as out_dir, monitor(model, out_dir=out_dir, on_nonfinite="warn"), \
            torch.no_grad():
        for i in range(steps):
            model(idx)
            if i % (steps // 10) == 0 or i == steps - 1:
                marks.append({"step": i, "rss_mib": round(rss_mib(), 1)})
    probe_marks = []
    with Probe(model, ring_size=256) as probe, torch.no_grad():  # the full probe's ring buffer, same length
        for i in range(steps):
            model(idx)
            if i % (steps // 10) == 0 or i == steps - 1:
                probe_marks.append({"step": i, "rss_mib": round(rss_mib(), 1)})
    return {"steps": steps, "marks": marks,
            "growth_mib": round(marks[-1]["rss_mib"] - marks[1]["rss_mib"], 1),
            "probe_marks": probe_marks,
            "probe_growth_mib": round(probe_marks[-1]["rss_mib"] - probe_marks[1]["rss_mib"], 1),
            "probe_records_kept": len(probe.result().records),
            "probe_calls": probe.result().calls}


def machine() -> dict[str, Any]:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few rounds (< 1 minute)")
    parser.add_argument("--only", choices=("overhead", "scaling", "diagnosis", "memory"), action="append")
    parser.add_argument("--device", default="cpu", help="device for the overhead table (e.g. cuda)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    args = parser.parse_args(argv)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(previous_threads)


def _run(args: argparse.Namespace) -> int:
    sections = args.only or ["overhead", "scaling", "diagnosis", "memory"]
    result: dict[str, Any] = {"machine": machine(), "quick": args.quick}
    started = time.perf_counter()
    if "overhead" in sections:
        result["overhead"] = overhead_table(args.quick, args.device)
    if "scaling" in sections:
        result["scaling"] = scaling(args.quick)
        if not args.quick:
            RESULTS.mkdir(exist_ok=True)
            plot_scaling(result["scaling"], RESULTS / "scaling.png")
    if "diagnosis" in sections:
        result["diagnosis"] = diagnosis_cost(args.quick)
    if "memory" in sections:
        result["memory"] = memory(args.quick)
    result["seconds"] = round(time.perf_counter() - started, 1)
    from benchmarks.report import render

    render(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
