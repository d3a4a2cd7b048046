"""One measured process of the scale benchmark (``benchmarks/scale.py`` starts it, one fresh interpreter per
measurement). It runs one job and writes what it measured about itself to ``--result``:

    baseline   torch.load the checkpoint, build the model, load_state_dict, one forward under no_grad in eval
    trace      ``nanprobe trace ARGS...`` in this process (nanprobe.cli.main.main), so that the peak RSS and
               the CUDA peak are the trace's own; a sampler thread records RSS over time and which nanprobe
               step the main thread is in
    train      the sentinel monitor's per-step overhead on a training step of the clean model (interleaved)

Every job reports ``peak_rss_mib`` (``ru_maxrss`` at exit) and, on CUDA, ``cuda_peak_mib``
(``torch.cuda.max_memory_allocated``).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

STARTED = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

__all__ = ["Sampler", "main"]


def peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _cuda(device: str) -> bool:
    return device.startswith("cuda") and torch.cuda.is_available()


def _cuda_figures(device: str) -> dict[str, Any]:
    if not _cuda(device):
        return {}
    torch.cuda.synchronize()
    return {"cuda_peak_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
            "cuda_device": torch.cuda.get_device_name()}


# -- where the trace is ---------------------------------------------------------------------------------------
def _chain(frame: FrameType | None) -> list[FrameType]:
    """nanprobe's frames on a stack, outermost first."""
    found = []
    while frame is not None:
        if "/nanprobe/" in frame.f_code.co_filename:
            found.append(frame)
        frame = frame.f_back
    return found[::-1]


def _name(frame: FrameType) -> str:
    module = Path(frame.f_code.co_filename).stem
    return f"{module}.{frame.f_code.co_qualname}"


def stage_of(frame: FrameType | None) -> tuple[str, list[str]]:
    """(stage, nanprobe call chain) of the main thread: the step ``cmd_trace.run`` is in (load_checkpoint,
    _run_diagnosis, render_diagnosis, ...), refined to the diagnosis engine's step (its ``Engine._*`` methods)
    and, inside ``_run_variant``, the variant's name. Falls back to the innermost nanprobe frame, so a
    rewrite of the internals still gets readable labels."""
    chain = _chain(frame)
    names = [_name(f) for f in chain]
    stage = names[-1] if names else "python"
    for i, f in enumerate(chain[:-1]):
        code = f.f_code
        if code.co_name == "run" and Path(code.co_filename).stem in ("cmd_trace", "engine"):
            stage = names[i + 1]  # the step cmd_trace.run is in, then the engine's
            if Path(code.co_filename).stem == "engine":
                stage = chain[i + 1].f_code.co_name
                for g in chain[i + 1:]:
                    variant = g.f_locals.get("v") if g.f_code.co_name == "_run_variant" else None
                    if variant is not None:
                        stage = f"_run_variant:{getattr(variant, 'key', None) or getattr(variant, 'name', '?')}"
                break
    return stage, names


class Sampler:
    """A daemon thread sampling RSS (and the CUDA allocation) every ``interval`` seconds with the main
    thread's nanprobe stage. ``summary()`` folds the samples into per-stage seconds and RSS and an inclusive
    seconds-per-function profile."""

    def __init__(self, interval: float = 0.1, cuda: bool = False) -> None:
        self.interval = interval
        self.cuda = cuda
        self.samples: list[dict[str, Any]] = []
        self.chains: list[list[str]] = []
        self._main = threading.main_thread().ident
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="nanprobe-bench-sampler")

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            frame = sys._current_frames().get(self._main)  # type: ignore[arg-type]
            stage, chain = stage_of(frame)
            del frame
            sample = {"t": round(time.perf_counter() - STARTED, 3), "rss_mib": round(rss_mib(), 1), "stage": stage}
            if self.cuda:
                sample["cuda_mib"] = round(torch.cuda.memory_allocated() / 2**20, 1)
            self.samples.append(sample)
            self.chains.append(chain)

    def summary(self) -> dict[str, Any]:
        """``segments``: consecutive samples in one stage (time span, RSS at start, max and end);
        ``stages``: seconds and max RSS per stage over the whole run; ``inclusive_seconds``: the 25 nanprobe
        functions the main thread spent most time in (callees included)."""
        segments: list[dict[str, Any]] = []
        stages: dict[str, dict[str, Any]] = {}
        inclusive: dict[str, float] = {}
        previous = self.samples[0]["t"] - self.interval if self.samples else 0.0
        for s, chain in zip(self.samples, self.chains, strict=True):
            dt, previous = s["t"] - previous, s["t"]
            if not segments or segments[-1]["stage"] != s["stage"]:
                segments.append({"stage": s["stage"], "t0": s["t"], "rss_start_mib": s["rss_mib"],
                                 "rss_max_mib": s["rss_mib"]})
            seg = segments[-1]
            seg.update(t1=s["t"], rss_end_mib=s["rss_mib"], rss_max_mib=max(seg["rss_max_mib"], s["rss_mib"]))
            row = stages.setdefault(s["stage"], {"stage": s["stage"], "seconds": 0.0, "rss_max_mib": 0.0})
            row["seconds"] += dt
            row["rss_max_mib"] = max(row["rss_max_mib"], s["rss_mib"])
            for name in set(chain):
                inclusive[name] = inclusive.get(name, 0.0) + dt
        for row in stages.values():
            row["seconds"] = round(row["seconds"], 2)
        top = sorted(inclusive.items(), key=lambda kv: -kv[1])[:25]
        return {"interval_s": self.interval, "segments": segments, "stages": list(stages.values()),
                "inclusive_seconds": {k: round(v, 2) for k, v in top}}


# -- the jobs -----------------------------------------------------------------------------------------------------
def baseline(args: argparse.Namespace) -> dict[str, Any]:
    """What running the model costs without nanprobe: load, build, one forward."""
    from benchmarks.scale_models import build_gpt2

    marks: dict[str, float] = {"imports": time.perf_counter() - STARTED}
    t = time.perf_counter()
    ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    batches = torch.load(args.batches, map_location="cpu", weights_only=True)
    marks["load"] = time.perf_counter() - t
    t = time.perf_counter()
    model = build_gpt2(**ckpt["config"])
    model.load_state_dict(ckpt["model_state_dict"])
    del ckpt
    model.to(args.device).eval()
    batch = {k: v.to(args.device) for k, v in batches[0].items()}
    marks["build"] = time.perf_counter() - t
    if _cuda(args.device):
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    with torch.no_grad():
        logits = model(**batch).logits
        finite = bool(torch.isfinite(logits).all())
    marks["forward"] = time.perf_counter() - t
    return {"finite_output": finite, "logits_shape": list(logits.shape),
            "seconds": {k: round(v, 2) for k, v in marks.items()}, **_cuda_figures(args.device)}


def trace(args: argparse.Namespace) -> dict[str, Any]:
    """``nanprobe trace`` in this very process, sampled, set up as the console script sets itself up."""
    from nanprobe.cli.main import main as nanprobe_main
    from nanprobe.cli.memory import release_freed_memory

    release_freed_memory()
    imports = time.perf_counter() - STARTED
    cuda = _cuda(args.device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with Sampler(args.sample, cuda=cuda) as sampler:
        code = nanprobe_main(args.trace_args)
    return {"exit_code": code, "seconds": {"imports": round(imports, 2)}, "profile": sampler.summary(),
            "timeline": sampler.samples, **_cuda_figures(args.device)}


def train(args: argparse.Namespace) -> dict[str, Any]:
    """The sentinel monitor around an AdamW training step of the clean model, against the bare step."""
    from benchmarks.harness import Variant, time_interleaved
    from benchmarks.scale_models import SIZES, make_batches, make_model
    from nanprobe.monitoring import monitor

    size = SIZES[args.size]
    model = make_model(size, faulty=False).to(args.device).train()
    ids = make_batches(size)[0]["input_ids"].to(args.device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    sync: Callable[[], None] = torch.cuda.synchronize if _cuda(args.device) else (lambda: None)
    losses: list[float] = []

    def step() -> object:
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        sync()
        losses.append(float(loss.detach()))
        return loss

    with tempfile.TemporaryDirectory() as out_dir:
        variants = [Variant("bare", step),
                    Variant("sentinel", step, lambda: monitor(model, out_dir=out_dir, on_nonfinite="warn"))]
        timings = time_interleaved(variants, rounds=args.rounds, steps=args.steps, warmup=args.warmup)
        bundles = sorted(p.name for p in Path(out_dir).rglob("*") if p.is_file())
    bare, sentinel = timings["bare"].median, timings["sentinel"].median
    fastest = min(timings["sentinel"].samples) / min(timings["bare"].samples)  # less sensitive to contention
    return {"bare_s": round(bare, 4), "sentinel_s": round(sentinel, 4), "ratio": round(sentinel / bare, 4),
            "ratio_of_fastest": round(fastest, 4),
            "samples": {k: [round(s, 4) for s in t.samples] for k, t in timings.items()},
            "rounds": args.rounds, "steps": args.steps, "warmup": args.warmup,
            "losses_finite": all(x == x and abs(x) != float("inf") for x in losses), "bundles": bundles,
            **_cuda_figures(args.device)}


JOBS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "baseline": baseline, "trace": trace, "train": train}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", choices=tuple(JOBS))
    parser.add_argument("--result", type=Path, required=True, help="write the measurements here (JSON)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoint", help="baseline: the checkpoint")
    parser.add_argument("--batches", help="baseline: the batches file")
    parser.add_argument("--size", help="train: a name in scale_models.SIZES")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--sample", type=float, default=0.1, help="trace: sampling interval in seconds")
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    args.trace_args = argv[cut + 1:]  # trace: nanprobe's own arguments, after --
    torch.set_num_threads(args.threads)
    result = JOBS[args.job](args)
    result.update(job=args.job, device=args.device, threads=torch.get_num_threads(),
                  child_seconds=round(time.perf_counter() - STARTED, 2), peak_rss_mib=peak_rss_mib())
    args.result.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
