"""The whole demo in order (what ``python -m ur4rec.demo`` runs), reporting through a small callback interface."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.text import Text

from .facts import eval_facts, fixed_facts, trace_facts, train_facts
from .results import DataChoice, EvalOutcome, Fact, TraceOutcome, TrainOutcome, render_facts
from .steps import Builder, choose_data, demo_config, dropout_only_fix, evaluate_monitored, trace_checkpoint, train

__all__ = ["STEPS", "DemoReport", "Reporter", "run_demo"]

STEPS = ("data", "train like the original", "evaluate under the monitor", "nanprobe trace", "fix and retrain",
         "report")


class Reporter(Protocol):
    """Where the demo's output goes (the CLI prints; a test may collect)."""

    def step(self, index: int, title: str) -> None: ...

    def show(self, renderable: RenderableType) -> None: ...

    def busy(self, label: str) -> AbstractContextManager[Any]:
        """Around a step without a progress bar of its own (a spinner, or nothing)."""
        ...


@dataclass
class DemoReport:
    data: DataChoice | None = None
    original: TrainOutcome | None = None
    broken_eval: EvalOutcome | None = None
    dropout_only_nonfinite: int | None = None
    trace: TraceOutcome | None = None
    fixed: TrainOutcome | None = None
    fixed_eval: EvalOutcome | None = None
    facts: list[Fact] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.facts) and all(f.ok for f in self.facts) and self.fixed_eval is not None

    def to_dict(self) -> dict[str, Any]:
        part = {k: (v.to_dict() if v is not None else None) for k, v in (
            ("data", self.data), ("original", self.original), ("original_eval", self.broken_eval),
            ("trace", self.trace), ("fixed", self.fixed), ("fixed_eval", self.fixed_eval))}
        fixed = self.fixed_eval.result if self.fixed_eval is not None else None
        return {"ok": self.ok, "seconds": round(self.seconds, 1), **part,
                "dropout_only_fix_nonfinite_samples": self.dropout_only_nonfinite,
                "facts": [f.to_dict() for f in self.facts],
                "fixed_metrics": dict(fixed.metrics) if fixed is not None else None,
                "most_popular_metrics": dict(fixed.baseline.metrics) if fixed is not None and fixed.baseline else None}

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """The short report at the end: what went wrong, what nanprobe showed, what changed."""
        o, e, t, f = self.original, self.broken_eval, self.trace, self.fixed_eval
        if o is None or e is None or t is None:
            yield Text("the demo stopped before the diagnosis; see the failed fact above", style="bold red")
            return
        r, verdict = e.result, (t.report.get("verdict") or {})
        first = t.report.get("first_nonfinite") or {}
        yield Text("What went wrong", style="bold underline")
        yield Text(f"  Trained fine (finite loss), but evaluation at batch {e.batch_size} gave non-finite scores for "
                   f"{r.nonfinite_samples} of {r.num_samples} test users in {r.nonfinite_batches} of {r.num_batches} "
                   f"batches: exactly the users with fewer than {e.max_seq_len} items, whose left padding leaves "
                   "early query positions with only padding keys to attend to.")
        yield Text("  In eval under no_grad nn.MultiheadAttention takes its native fast path, which returns NaN for a "
                   "fully masked query row (train mode returns 0); the next block mixes that NaN into every "
                   "position of the user.")
        yield Text("What nanprobe showed", style="bold underline")
        yield Text(f"  verdict {verdict.get('cause')} at {first.get('module')} ({first.get('op')}); dropout p=0 -> "
                   "still NaN, train mode -> finite, fast path off -> finite; failing samples = left-padded rows.")
        yield Text(f"  The original team's dropout theory was wrong: dropout is off in eval, and giving the model "
                   f"the YAML's sasrec_dropout={o.config_dropout} leaves {self.dropout_only_nonfinite} non-finite "
                   f"samples. The config bug is real but separate (the model had {o.model_dropout}).")
        yield Text("What changed", style="bold underline")
        if f is not None and f.result.baseline is not None:
            m, b = f.result.metrics, f.result.baseline.metrics
            yield Text(f"  attention_mask_style {o.mask_style} -> safe (ur4rec's default: every query attends at "
                       "least to itself, padding zeroed) and build_model(config) instead of hand-listed arguments. "
                       f"Test: {f.result.nonfinite_samples} non-finite; hit@5 {m['hit@5']:.4f} (most-popular "
                       f"{b['hit@5']:.4f}), ndcg@5 {m['ndcg@5']:.4f} ({b['ndcg@5']:.4f}).")
        bad = [x for x in self.facts if not x.ok]
        status = (f"all {len(self.facts)} expected facts held" if not bad else
                  f"{len(bad)} expected fact(s) did NOT hold: " + "; ".join(x.name for x in bad))
        yield Text(f"{status} ({self.seconds:.0f} s)", style="bold green" if not bad else "bold red")


def run_demo(reporter: Reporter, *, data: str = "auto", quick: bool = False, workdir: str | Path,
             build_original: Builder, console: Console | None = None, progress: bool = True) -> DemoReport:
    """Run the six steps; every expected fact is checked on what ran. ``build_original(cfg, data)`` is the
    original team's hand-built construction (:func:`ur4rec.demo.original_setup.build_like_the_original`)."""
    t0 = time.perf_counter()
    work = Path(workdir)
    rep = DemoReport()

    def check(facts: list[Fact]) -> bool:
        rep.facts.extend(facts)
        reporter.show(render_facts(facts))
        return all(x.ok for x in facts)

    reporter.step(1, STEPS[0])
    rep.data = choose_data("synthetic" if quick and data == "auto" else data)
    reporter.show(rep.data)

    reporter.step(2, STEPS[1])
    cfg = demo_config(rep.data, quick=quick)
    rep.original = train(cfg, work / "original", build=build_original, progress=progress, console=console)
    reporter.show(rep.original)
    ok = check(train_facts(rep.original))

    if ok:
        reporter.step(3, STEPS[2])
        with reporter.busy("evaluating at batch 64 under nanprobe's monitor (it diagnoses the first bad batch)"):
            rep.broken_eval = evaluate_monitored(rep.original.checkpoint, work / "original" / "nanprobe",
                                                 num_threads=cfg.train.num_threads)
        with reporter.busy("the original team's fix alone: sasrec_dropout 0.0 reaching the model"):
            rep.dropout_only_nonfinite = dropout_only_fix(rep.original.checkpoint)
        reporter.show(rep.broken_eval)
        ok = check(eval_facts(rep.broken_eval, rep.dropout_only_nonfinite))

    if ok:
        reporter.step(4, STEPS[3])
        with reporter.busy("nanprobe.diagnose: control run, localization, replay variants"):
            rep.trace = trace_checkpoint(rep.original.checkpoint, work / "trace", max_batches=2 if quick else None,
                                         num_threads=cfg.train.num_threads)
        reporter.show(rep.trace)
        ok = check(trace_facts(rep.trace))

    if ok:
        reporter.step(5, STEPS[4])
        fixed_cfg = demo_config(rep.data, fixed=True, quick=quick)
        rep.fixed = train(fixed_cfg, work / "fixed", progress=progress, console=console)
        reporter.show(rep.fixed)
        with reporter.busy("evaluating the fixed model at batch 64 under nanprobe's monitor"):
            rep.fixed_eval = evaluate_monitored(rep.fixed.checkpoint, work / "fixed" / "nanprobe",
                                                num_threads=fixed_cfg.train.num_threads)
        reporter.show(rep.fixed_eval)
        check(fixed_facts(rep.fixed, rep.fixed_eval))

    rep.seconds = time.perf_counter() - t0
    reporter.step(6, STEPS[5])
    reporter.show(rep)
    return rep
