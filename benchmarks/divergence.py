"""Does the monitor explain a diverging run, and warn before it? A sweep of small training runs under
``nanprobe.monitor``: runs that diverge (too high a learning rate from the start or after a schedule jump,
float16 without a loss scaler, an unstable hand-written loss, a deeper net) and healthy ones (safe learning
rates, gradient clipping, a one-step learning-rate spike, a GradScaler run with skipped overflow steps, Adam).

    python benchmarks/divergence.py [--json benchmarks/results/divergence.json] [--readme]

Reported, as the issue asks:
* the share of diverging runs whose bundle gives the expected cause (``training_divergence``; for a float16
  backward whose gradients outgrow the dtype without exponential growth, ``dtype_overflow``) and, for a
  divergence, ``root.step`` within 20% of the true onset (``|root.step - onset| <= max(2, 0.2 * (failure -
  onset))``: 20% of the run's diverging part).
  The true onset of a run whose learning rate jumps is the jump; of a run at one learning rate throughout, the
  step where its growth began: the last step at which the loss was within 10% of its lowest so far;
* the median lead of the early warning (steps between the step at which the first warning was given and the
  first non-finite value; a signal read back a step late is given a step after the one it describes), and
  the share of diverging runs warned at least 5 steps ahead;
* false warnings per 10,000 healthy steps (any early warning or bundle in a healthy run); a run that stays
  finite only just (its loss scale below 1, its outputs a third of float16's max) is reported apart, with
  the rate it would give if its (true) warnings were counted false;
* the same shares per family of diverging runs, and for the first sweep's 14 runs alone (the runs under
  autocast came later).

The monitor's thresholds were chosen on these runs: ``benchmarks/divergence_heldout.py`` measures them on runs
drawn at random instead.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nanprobe.monitoring import monitor
from nanprobe.monitoring.monitor import GrowthWarning
from nanprobe.monitoring.signals import READ_LATE
from nanprobe.postmortem.bundle import load_bundle

README = Path(__file__).resolve().parents[1] / "README.md"
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Run:
    name: str
    diverges: bool
    lr: float
    steps: int = 300
    depth: int = 2
    loss: str = "mse"  # "mse" | "exp" (exp(|residual|): unstable once residuals grow)
    half: bool = False  # float16 weights and data, no loss scaler
    clip: float | None = None
    jump: tuple[int, float] | None = None  # (step, new lr): a schedule mistake
    spike: int | None = None  # one step at lr 1.2, then back (healthy)
    scaler: bool = False  # autocast float16 + GradScaler with a too-high initial scale (skipped steps)
    adam: bool = False
    amp: bool = False  # autocast float16 around the forward and the loss, float32 weights, no loss scaler
    target: float = 1.0  # the regression targets' scale (1e4: unnormalised targets, e.g. prices)
    expect: str = "training_divergence"  # the cause a diverging run should get
    family: str = ""  # what kind of failure (or of healthy run) it stands for, for the per-family table
    near_limit: bool = False  # stays finite, but only just: its warnings are true, so they are not counted false
    # the held-out sweep (benchmarks/divergence_heldout.py) varies these too; the fixed sweep keeps the defaults
    width: int = 32
    act: str = "tanh"  # "tanh" | "gelu"
    momentum: float = 0.0
    seed: int = 0  # the weights' initialisation
    data_seed: int = 1
    batch: int | None = None  # None: the same 64 samples every step; else minibatches of 512 samples


_OVERFLOW = "dtype_overflow"
RUNS = [
    Run("lr 0.65", True, 0.65, family="lr too high"), Run("lr 0.7", True, 0.7, family="lr too high"),
    Run("lr 0.8", True, 0.8, family="lr too high"), Run("lr 1.0", True, 1.0, family="lr too high"),
    Run("jump to 0.7 at 50", True, 0.05, jump=(50, 0.7), family="schedule jump"),
    Run("jump to 0.75 at 100", True, 0.05, jump=(100, 0.75), family="schedule jump"),
    Run("jump to 0.9 at 150", True, 0.05, jump=(150, 0.9), family="schedule jump"),
    Run("jump to 0.7 at 200", True, 0.02, steps=500, jump=(200, 0.7), family="schedule jump"),
    Run("fp16, no scaler, lr 0.65", True, 0.65, half=True, family="float16 weights, no scaler"),
    Run("fp16, no scaler, lr 0.7", True, 0.7, half=True, family="float16 weights, no scaler"),
    Run("fp16, no scaler, lr 0.8", True, 0.8, half=True, family="float16 weights, no scaler"),
    Run("exp loss, lr 0.42", True, 0.42, loss="exp", family="unstable loss"),
    Run("4 layers, lr 0.6", True, 0.6, depth=4, steps=400, family="lr too high"),
    Run("exp loss, lr 0.45", True, 0.45, loss="exp", family="unstable loss"),
    Run("autocast fp16, no scaler, lr 0.7", True, 0.7, amp=True, family="autocast float16, no scaler"),
    Run("autocast fp16, no scaler, targets x1e4, lr 1e-4", True, 1e-4, amp=True, target=1e4, expect=_OVERFLOW,
        family="autocast float16, no scaler"),
    Run("autocast fp16, no scaler, targets x1e4, Adam 0.1", True, 0.1, adam=True, amp=True, target=1e4, steps=850,
        expect=_OVERFLOW, family="autocast float16, no scaler"),
    # healthy (850 steps each: together above 10,000 steps)
    Run("lr 0.05", False, 0.05, steps=850), Run("lr 0.2", False, 0.2, steps=850), Run("lr 0.5", False, 0.5, steps=850),
    Run("clip 1.0, lr 0.9", False, 0.9, steps=850, clip=1.0), Run("clip 5.0, lr 2.0", False, 2.0, steps=850, clip=5.0),
    Run("lr spike at 100", False, 0.05, steps=850, spike=100), Run("lr spike at 400", False, 0.1, steps=850, spike=400),
    Run("GradScaler, skipped steps", False, 0.05, steps=850, scaler=True),
    Run("fp16, lr 0.3", False, 0.3, steps=850, half=True), Run("exp loss, lr 0.2", False, 0.2, steps=850, loss="exp"),
    Run("Adam 1e-3", False, 1e-3, steps=850, adam=True),
    Run("Adam 1e-2, fits its data (loss at the float floor)", False, 1e-2, steps=850, adam=True, depth=3),
    Run("4 layers, lr 0.3", False, 0.3, steps=850, depth=4),
    Run("autocast fp16, no scaler, lr 0.3", False, 0.3, steps=850, amp=True),
    Run("autocast fp16 + GradScaler, targets x1e3, lr 1e-4", False, 1e-4, steps=850, scaler=True, target=1e3),
    # finite, near float16's limit: the scaler goes below 1 (unscaled gradients overflow) and the outputs fit
    # targets of 2.4e4, a third of float16's max; reported, not counted among the healthy runs
    Run("autocast fp16 + GradScaler, targets x1e4, lr 1e-4", False, 1e-4, steps=850, scaler=True, target=1e4,
        near_limit=True),
]
FIRST_SWEEP = 14
"""The first 14 diverging runs are the sweep this benchmark started with; the README reports both."""


@dataclass
class Outcome:
    run: str
    diverges: bool
    steps: int
    expect: str = "training_divergence"
    family: str = ""
    near_limit: bool = False
    failure: int | None = None
    cause: str | None = None
    root_step: int | None = None
    onset: int = 0
    warned_at: int | None = None
    warning: str | None = None
    warnings: int = 0
    bundles: int = 0
    skipped: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def cause_right(self) -> bool:
        return self.cause == self.expect

    @property
    def onset_right(self) -> bool:
        """``root.step`` within 20% of the divergence onset; a dtype-range failure has no onset to date."""
        if self.expect != "training_divergence":
            return True
        if self.root_step is None or self.failure is None:
            return False
        return abs(self.root_step - self.onset) <= max(2.0, 0.2 * (self.failure - self.onset))

    @property
    def lead(self) -> int | None:
        return None if self.warned_at is None or self.failure is None else self.failure - self.warned_at


def _model(run: Run) -> nn.Module:
    act = nn.GELU if run.act == "gelu" else nn.Tanh
    layers: list[nn.Module] = [nn.Linear(16, run.width), act()]
    for _ in range(run.depth - 1):
        layers += [nn.Linear(run.width, run.width), act()]
    return nn.Sequential(*layers, nn.Linear(run.width, 1))


def train(run: Run, out_dir: Path) -> Outcome:
    torch.manual_seed(run.seed)
    model = _model(run)
    gen = torch.Generator().manual_seed(run.data_seed)
    n = 64 if run.batch is None else 512
    data_x, data_y = torch.randn(n, 16, generator=gen), torch.randn(n, 1, generator=gen) * run.target
    if run.half:
        model, data_x, data_y = model.half(), data_x.half(), data_y.half()
    opt: torch.optim.Optimizer = (torch.optim.Adam(model.parameters(), lr=run.lr) if run.adam
                                  else torch.optim.SGD(model.parameters(), lr=run.lr, momentum=run.momentum))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 40) if run.scaler else None
    out = Outcome(run.name, run.diverges, 0, expect=run.expect, family=run.family, near_limit=run.near_limit)
    losses: list[float] = []
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with monitor(model, out_dir=out_dir, on_nonfinite="dump", optimizer=opt, scaler=scaler,
                     run_name=re.sub(r"\W+", "-", run.name), time_budget=None) as mon:
            for step in range(run.steps):
                x, y = data_x, data_y
                if run.batch is not None:
                    pick = torch.randint(0, n, (run.batch,), generator=gen)
                    x, y = data_x[pick], data_y[pick]
                for group in opt.param_groups:
                    group["lr"] = (run.jump[1] if run.jump and step >= run.jump[0] else
                                   1.2 if run.spike is not None and step == run.spike else run.lr)
                with torch.autocast("cpu", dtype=torch.float16, enabled=run.scaler or run.amp):
                    residual = model(x) - y
                    loss = (residual ** 2).mean() if run.loss == "mse" else torch.exp(residual.abs()).mean()
                mon.check_loss(loss)
                out.steps = step + 1
                losses.append(float(loss))
                if not math.isfinite(losses[-1]):
                    out.failure = step
                    break
                opt.zero_grad()
                (scaler.scale(loss) if scaler is not None else loss).backward()
                mon.after_backward()
                if run.clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), run.clip)
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                mon.step()
    out.seconds = time.perf_counter() - start
    out.onset = run.jump[0] if run.jump else _growth_began(losses)
    growth = [w for w in caught if issubclass(w.category, GrowthWarning)]
    out.warnings = len(growth)
    if mon.warnings:  # when the user got it: a signal read back a step late warns a step after its own
        first = mon.warnings[0]
        out.warned_at, out.warning = first.step + (1 if first.signal in READ_LATE else 0), first.message
    out.skipped = sum(1 for r in mon.history.tail() if r.get("scaler_skipped"))
    out.bundles = len(mon.bundles)
    if mon.bundles:
        report = load_bundle(mon.bundles[0]).report
        if report.verdict is not None:
            out.cause = report.verdict.cause
            out.root_step = report.verdict.root.step if report.verdict.root is not None else None
    return out


def _growth_began(losses: list[float]) -> int:
    """The last step at which the loss was within 10% of its lowest so far (before it ran away)."""
    best, began = math.inf, 0
    for step, value in enumerate(losses):
        if not math.isfinite(value):
            break
        best = min(best, value)
        if value <= 1.1 * best:
            began = step
    return began


def _shares(bad: list[Outcome]) -> dict[str, Any]:
    leads = [o.lead for o in bad if o.lead is not None]
    return {
        "diverging_runs": len(bad), "diverged": sum(o.failure is not None for o in bad),
        "right_cause_and_onset": sum(o.cause_right and o.onset_right for o in bad) / max(len(bad), 1),
        "right_cause": sum(o.cause_right for o in bad) / max(len(bad), 1),
        "median_lead_steps": statistics.median(leads) if leads else None,
        "warned_5_ahead": sum(1 for o in bad if (o.lead or 0) >= 5) / max(len(bad), 1),
    }


def summarise(outcomes: list[Outcome]) -> dict[str, Any]:
    bad = [o for o in outcomes if o.diverges]
    good = [o for o in outcomes if not o.diverges and not o.near_limit]
    near = [o for o in outcomes if o.near_limit]
    healthy_steps = sum(o.steps for o in good)
    false = sum(o.warnings + o.bundles for o in good)
    first = {r.name for r in [r for r in RUNS if r.diverges][:FIRST_SWEEP]}
    families = sorted({o.family for o in bad}, key=[o.family for o in bad].index)
    return {
        **_shares(bad),
        "first_sweep": _shares([o for o in bad if o.run in first]),
        "families": {f: _shares([o for o in bad if o.family == f]) for f in families},
        "healthy_runs": len(good), "healthy_steps": healthy_steps,
        "false_warnings_per_10k": false / max(healthy_steps, 1) * 10_000,
        "healthy_finished": sum(o.failure is None for o in good),
        "near_limit_runs": len(near), "near_limit_warnings": sum(o.warnings for o in near),
        "false_warnings_per_10k_counting_near_limit": (false + sum(o.warnings + o.bundles for o in near))
        / max(healthy_steps + sum(o.steps for o in near), 1) * 10_000,
    }


def table(outcomes: list[Outcome], summary: dict[str, Any]) -> str:
    lines = ["| run | kind | first non-finite | cause | root.step (true onset) | first warning (lead) |",
             "|---|---|---|---|---|---|"]
    for o in outcomes:
        kind = "diverges" if o.diverges else "finite, near the limit" if o.near_limit else "healthy"
        fail = str(o.failure) if o.failure is not None else f"none in {o.steps} steps"
        root = ("-" if not o.diverges else f"{o.root_step} ({o.onset})" if o.expect == "training_divergence"
                else f"{o.root_step} (n/a)")
        warn = (f"step {o.warned_at} ({o.lead})" if o.lead is not None else str(o.warned_at)) \
            if o.warned_at is not None else "none"
        extra = f", {o.skipped} skipped by the scaler" if o.skipped else ""
        lines.append(f"| {o.run}{extra} | {kind} | {fail} | {o.cause or '-'} | {root} | {warn} |")
    s = summary
    lines += ["", "| diverging runs | n | right cause (and onset) | warned at least 5 steps ahead | median lead |",
              "|---|---|---|---|---|"]
    for family, f in s["families"].items():
        lines.append(f"| {family} | {f['diverging_runs']} | {f['right_cause_and_onset']:.0%} | "
                     f"{f['warned_5_ahead']:.0%} | {f['median_lead_steps']} |")
    first = s["first_sweep"]
    lines += ["", f"- right cause and `root.step` within 20% of the onset: **{s['right_cause_and_onset']:.0%}** of "
                  f"{s['diverging_runs']} diverging runs (right cause alone: {s['right_cause']:.0%}); target 90%",
              f"- early warning at least 5 steps ahead: **{s['warned_5_ahead']:.0%}** (median lead "
              f"{s['median_lead_steps']} steps); target 80%",
              f"- the first sweep's {first['diverging_runs']} diverging runs alone: right cause and onset "
              f"{first['right_cause_and_onset']:.0%}, warned at least 5 steps ahead {first['warned_5_ahead']:.0%} "
              f"(median lead {first['median_lead_steps']})",
              f"- false warnings: **{s['false_warnings_per_10k']:.2f} per 10,000 healthy steps** "
              f"({s['healthy_steps']} steps in {s['healthy_runs']} runs); target at most 1"]
    if s["near_limit_runs"]:
        lines.append(f"- runs that stay finite near the dtype's limit: {s['near_limit_runs']}, with "
                     f"{s['near_limit_warnings']} warning(s) (counted as false: "
                     f"{s['false_warnings_per_10k_counting_near_limit']:.2f} per 10,000 steps)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", metavar="FILE", help="write every outcome and the summary")
    parser.add_argument("--readme", action="store_true", help="replace the divergence block of README.md")
    parser.add_argument("--only", nargs="*", help="run only these runs (by name)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    runs = [r for r in RUNS if not args.only or r.name in args.only]
    outcomes = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, run in enumerate(runs):
            outcomes.append(train(run, Path(tmp) / str(i)))
            o = outcomes[-1]
            print(f"{run.name:32s} failure {o.failure} cause {o.cause} root {o.root_step} warned {o.warned_at} "
                  f"warnings {o.warnings} ({o.seconds:.1f} s)", flush=True)
    summary = summarise(outcomes)
    text = table(outcomes, summary)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": platform.platform(), "torch": torch.__version__,
                                               "summary": summary, "runs": [asdict(o) for o in outcomes]},
                                              indent=2) + "\n")
    if args.readme:
        readme = README.read_text()
        block = f"<!-- divergence:begin -->\n{text}<!-- divergence:end -->"
        if "<!-- divergence:begin -->" not in readme:
            raise SystemExit("README.md has no divergence block")
        README.write_text(re.sub(r"<!-- divergence:begin -->.*?<!-- divergence:end -->", lambda m: block, readme,
                                 flags=re.S))
    return 0


if __name__ == "__main__":
    sys.exit(main())
