"""Two ways a training run blows up within a few steps, under nanprobe's monitor, and what nanprobe says.

    python examples/training_blowups/two_blowups.py [--workdir runs/training_blowups]

1. A learning rate typed as ``3e3`` instead of ``3e-3``: the first optimizer step replaces the weights, the run
   overflows two steps later, in a LayerNorm. The verdict is not an overflow in that LayerNorm but the run's
   divergence from step 0, and the fix says which learning rate a lost minus sign gives.
2. One corrupt row (x 1e6) in the batch of step 30 of an otherwise healthy run: its gradient step blows the
   weights up (in a net without LayerNorm, which would absorb it). The verdict is dated at step 30 and names the
   row of that batch; the fix is that row and gradient clipping, not a lower learning rate. The monitor warns at
   that step's ``after_backward()``, before the optimizer applies it (``on_warning="raise"`` would stop there).
3. The same data with ``clip_grad_norm_`` (the fix): the run stays finite, and the monitor's history still names
   the row of step 30's batch that stood out.

Each case prints what nanprobe reported and the facts checked; the exit status is 1 when a fact did not hold.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import nanprobe
from nanprobe.postmortem.bundle import load_bundle
from nanprobe.report.history import Outlier, outlier_lines

BATCH, CORRUPT_STEP, CORRUPT_ROW = 32, 30, 5


@dataclass
class Run:
    name: str
    losses: list[float]
    history: list[dict[str, Any]]
    bundles: list[Path]
    warnings: list[nanprobe.monitoring.warning.EarlyWarning]

    @property
    def failed_at(self) -> int | None:
        return next((i for i, v in enumerate(self.losses) if not math.isfinite(v)), None)

    def verdict(self) -> nanprobe.report.Verdict | None:
        return load_bundle(self.bundles[0]).report.verdict if self.bundles else None


def _net(layer_norm: bool) -> nn.Module:
    """An MLP, with a LayerNorm after each hidden layer or not (a LayerNorm would absorb case 2's outlier)."""
    torch.manual_seed(0)
    norm: Any = nn.LayerNorm if layer_norm else lambda width: nn.Identity()
    return nn.Sequential(nn.Linear(8, 64), norm(64), nn.ReLU(), nn.Linear(64, 64), norm(64), nn.ReLU(),
                         nn.Linear(64, 1))


def _data(corrupt: bool) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(60 * BATCH, 8, generator=gen), torch.randn(60 * BATCH, 1, generator=gen)
    if corrupt:
        x[CORRUPT_STEP * BATCH + CORRUPT_ROW] *= 1e6  # a unit error in one record, say
    return x, y


def train(name: str, workdir: Path, *, lr: float, corrupt: bool, clip: float | None = None) -> Run:
    """Minibatches in order, the loss checked, the gradients checked, the optimizer attached."""
    model = _net(layer_norm=not corrupt)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    x, y = _data(corrupt)
    losses: list[float] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # printed below instead
        with nanprobe.monitor(model, out_dir=workdir / name, optimizer=opt, on_nonfinite="dump",
                              run_name=name) as mon:
            for step in range(len(x) // BATCH):
                rows = slice(step * BATCH, (step + 1) * BATCH)
                loss = nn.functional.mse_loss(model(x[rows]), y[rows])
                mon.check_loss(loss)
                losses.append(float(loss))
                if not math.isfinite(losses[-1]):
                    break
                opt.zero_grad()
                loss.backward()
                mon.after_backward()
                if clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), clip)
                opt.step()
                mon.step()
    return Run(name, losses, mon.history.tail(), mon.bundles, list(mon.warnings))


def facts(typo: Run, corrupt: Run, clipped: Run) -> list[tuple[str, bool]]:
    v1, v2 = typo.verdict(), corrupt.verdict()
    logged = next((r for r in clipped.history if r["step"] == CORRUPT_STEP), {})
    return [
        ("1: lr 3e3 fails within 4 steps, and the verdict is training_divergence from step 0",
         typo.failed_at is not None and typo.failed_at <= 4 and v1 is not None
         and v1.cause == "training_divergence" and v1.root is not None and v1.root.step == 0),
        ("1: the fix names the learning rate and what a lost minus sign gives (0.003)",
         v1 is not None and "3e+03" in v1.fix and "meant as 0.003" in v1.fix),
        (f"2: the corrupt batch's run is dated at step {CORRUPT_STEP}, not at its learning rate",
         corrupt.failed_at is not None and v2 is not None and v2.root is not None
         and v2.root.step == CORRUPT_STEP and "lower it" not in v2.fix),
        (f"2: the fix names row {CORRUPT_ROW} of that batch and gradient clipping",
         v2 is not None and f"row {CORRUPT_ROW} of that step's batch" in v2.fix and "clip gradients" in v2.fix),
        (f"2: warned at step {CORRUPT_STEP}, after its backward and before its optimizer step (grad_spike)",
         any(w.signal == "grad_spike" and w.step == CORRUPT_STEP for w in corrupt.warnings)),
        (f"3: clipped, the run stays finite, and its history still names row {CORRUPT_ROW} of step "
         f"{CORRUPT_STEP}'s batch", clipped.failed_at is None and not clipped.bundles
         and getattr(Outlier.of(logged), "row", None) == CORRUPT_ROW),
    ]


def _describe(run: Run) -> str:
    failed = (f"non-finite at step {run.failed_at}" if run.failed_at is not None
              else f"finite for {len(run.losses)} steps")
    lines = [f"{run.name}: {failed}"]
    for w in run.warnings:
        lines.append(f"  early warning at step {w.step} ({w.signal}): {w.message}")
    verdict = run.verdict()
    if verdict is not None:
        lines += [f"  verdict: {verdict.cause}, root.step {verdict.root.step if verdict.root else None}",
                  f"  {verdict.summary}", f"  fix: {verdict.fix}"]
    lines += [f"  history: {line}" for line in outlier_lines(run.history)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("runs/training_blowups"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    runs = [train("lr-typo", args.workdir, lr=3e3, corrupt=False),
            train("corrupt-row", args.workdir, lr=0.05, corrupt=True),
            train("corrupt-row-clipped", args.workdir, lr=0.05, corrupt=True, clip=1.0)]
    for run in runs:
        print(_describe(run), end="\n\n")
    checked = facts(*runs)
    for text, held in checked:
        print(f"{'held' if held else 'FAILED'}: {text}")
    return 0 if all(held for _, held in checked) else 1


if __name__ == "__main__":
    sys.exit(main())
