"""The early warning on runs it was not tuned on. ``benchmarks/divergence.py``'s fixed sweep is the one the
monitor's thresholds were chosen against; this one draws training runs at random (seeded) from wider families:
width, depth, activation, initialisation and data seeds, full batch or minibatches, SGD with and without
momentum, Adam, float32, float16 weights, autocast float16 without a scaler, an ``exp`` loss, a learning rate
that jumps, clipping. Whether a run diverges is not chosen: a run diverges when its loss becomes non-finite
within its steps, and is healthy when it stays finite.

    python benchmarks/divergence_heldout.py [--runs 240] [--seed 3] [--json FILE] [--readme]

Reported, as for the fixed sweep: the share of diverging runs warned at least 5 steps ahead (of all of them,
and of those that fail after step 15: a run that fails within its first 15 steps leaves no 5 steps to warn
in after the monitor's 10-step grace), the median lead, false warnings per 10,000 healthy steps, and the causes
the bundles gave (a training-run cause is ``training_divergence``, or ``dtype_overflow`` of a float16 run), with
``root.step`` within 20% of the onset for the divergences.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import statistics
import sys
import tempfile
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.divergence import README, Outcome, Run, train
from nanprobe.monitoring.warning import GRACE

LEAD = 5
TRAINING_CAUSES = ("training_divergence", "dtype_overflow")


def draw(rng: random.Random, index: int, steps: int) -> Run:
    """One run from one family, its knobs drawn from ``rng``."""
    family = rng.choice(["sgd", "momentum", "adam", "float16 weights", "autocast float16", "exp loss", "jump"])
    lr = {"sgd": (-1.0, 0.2), "momentum": (-2.0, -0.5), "adam": (-2.5, -0.5), "float16 weights": (-1.0, 0.1),
          "autocast float16": (-1.0, 0.1), "exp loss": (-1.0, -0.2), "jump": (-2.0, -1.3)}[family]
    run = Run(f"{index:03d} {family}", False, round(10 ** rng.uniform(*lr), 4), steps=steps, family=family,
              depth=rng.choice([2, 3, 4]), width=rng.choice([32, 64]), act=rng.choice(["tanh", "gelu"]),
              seed=rng.randrange(10_000), data_seed=rng.randrange(10_000), batch=rng.choice([None, 32]),
              clip=rng.choice([None, None, None, 1.0, 5.0]))
    if family == "momentum":
        run = replace(run, momentum=0.9)
    elif family == "adam":
        run = replace(run, adam=True)
    elif family == "float16 weights":
        run = replace(run, half=True)
    elif family == "autocast float16":
        run = replace(run, amp=True)
    elif family == "exp loss":
        run = replace(run, loss="exp")
    elif family == "jump":
        run = replace(run, jump=(rng.randrange(50, 200), round(10 ** rng.uniform(-0.5, 0.2), 3)))
    knobs = [f"lr {run.lr:g}" + (f" -> {run.jump[1]:g} at {run.jump[0]}" if run.jump else ""),
             f"{run.depth}x{run.width} {run.act}", "full batch" if run.batch is None else f"batch {run.batch}"]
    if run.clip is not None:
        knobs.append(f"clip {run.clip:g}")
    return replace(run, name=f"{run.name}: {', '.join(knobs)}")


def _shares(bad: list[Outcome]) -> dict[str, Any]:
    leads = [o.lead for o in bad if o.lead is not None]
    late = [o for o in bad if (o.failure or 0) >= GRACE + LEAD]
    divergences = [o for o in bad if o.cause == "training_divergence"]
    return {
        "diverging_runs": len(bad),
        "warned_5_ahead": sum((o.lead or 0) >= LEAD for o in bad) / max(len(bad), 1),
        "failing_after_15": len(late),
        "warned_5_ahead_failing_after_15": sum((o.lead or 0) >= LEAD for o in late) / max(len(late), 1),
        "median_lead_steps": statistics.median(leads) if leads else None,
        "training_cause": sum(o.cause in TRAINING_CAUSES for o in bad) / max(len(bad), 1),
        "divergence_onset_right": sum(o.onset_right for o in divergences) / max(len(divergences), 1),
    }


def summarise(outcomes: list[Outcome]) -> dict[str, Any]:
    bad = [o for o in outcomes if o.diverges]
    good = [o for o in outcomes if not o.diverges]
    healthy_steps = sum(o.steps for o in good)
    false = [o for o in good if o.warnings or o.bundles]
    families = sorted({o.family for o in outcomes})
    return {
        **_shares(bad),
        "causes": dict(Counter(str(o.cause) for o in bad).most_common()),
        "families": {f: {**_shares([o for o in bad if o.family == f]),
                         "healthy_runs": sum(o.family == f for o in good)} for f in families},
        "healthy_runs": len(good), "healthy_steps": healthy_steps,
        "false_warnings_per_10k": sum(o.warnings + o.bundles for o in good) / max(healthy_steps, 1) * 10_000,
        "healthy_runs_warned": [o.run for o in false],
    }


def table(summary: dict[str, Any], runs: int, seed: int) -> str:
    s = summary
    lines = [f"{runs} runs drawn with seed {seed}: {s['diverging_runs']} diverged, {s['healthy_runs']} stayed finite.",
             "", "| family | diverged | warned at least 5 steps ahead (of those failing after step 15) | median lead "
                 "| healthy |", "|---|---|---|---|---|"]
    for family, f in s["families"].items():
        lines.append(f"| {family} | {f['diverging_runs']} | {f['warned_5_ahead']:.0%} "
                     f"({f['warned_5_ahead_failing_after_15']:.0%} of {f['failing_after_15']}) | "
                     f"{'-' if f['median_lead_steps'] is None else f['median_lead_steps']} | {f['healthy_runs']} |")
    lines += ["", f"- early warning at least 5 steps ahead: **{s['warned_5_ahead']:.0%}** of {s['diverging_runs']} "
                  f"diverging runs; **{s['warned_5_ahead_failing_after_15']:.0%}** of the {s['failing_after_15']} "
                  f"that fail after step 15 (median lead {s['median_lead_steps']} steps)",
              f"- false warnings: **{s['false_warnings_per_10k']:.2f} per 10,000 healthy steps** "
              f"({s['healthy_steps']} steps in {s['healthy_runs']} runs; runs warned: "
              f"{', '.join(s['healthy_runs_warned']) or 'none'})",
              f"- a training-run cause: {s['training_cause']:.0%} of diverging runs "
              f"({', '.join(f'{k} {v}' for k, v in s['causes'].items())}); `root.step` within 20% of the onset: "
              f"{s['divergence_onset_right']:.0%} of the divergences"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=240, help="how many runs to draw (default 240)")
    parser.add_argument("--steps", type=int, default=400, help="steps per run (default 400)")
    parser.add_argument("--seed", type=int, default=3,
                        help="the draw's seed (default 3; seeds 0 to 2 were used while the rules were made)")
    parser.add_argument("--json", metavar="FILE", help="write every outcome and the summary")
    parser.add_argument("--readme", action="store_true", help="replace the held-out block of README.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    runs = [draw(rng, i, args.steps) for i in range(args.runs)]
    outcomes = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, run in enumerate(runs):
            o = train(run, Path(tmp) / str(i))
            o.diverges = o.failure is not None
            outcomes.append(o)
            print(f"{run.name:60s} failure {o.failure} cause {o.cause} root {o.root_step} (onset {o.onset}) "
                  f"warned {o.warned_at} warnings {o.warnings} ({o.seconds:.1f} s)", flush=True)
    summary = summarise(outcomes)
    text = table(summary, args.runs, args.seed)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": platform.platform(), "torch": torch.__version__,
                                               "seed": args.seed, "summary": summary,
                                               "runs": [asdict(o) for o in outcomes]}, indent=2) + "\n")
    if args.readme:
        readme = README.read_text()
        block = f"<!-- divergence-heldout:begin -->\n{text}<!-- divergence-heldout:end -->"
        if "<!-- divergence-heldout:begin -->" not in readme:
            raise SystemExit("README.md has no divergence-heldout block")
        README.write_text(re.sub(r"<!-- divergence-heldout:begin -->.*?<!-- divergence-heldout:end -->",
                                 lambda m: block, readme, flags=re.S))
    return 0


if __name__ == "__main__":
    sys.exit(main())
