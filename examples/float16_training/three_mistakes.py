"""Three ways a float16 training run goes NaN, each under nanprobe's monitor, and what nanprobe says.

    python examples/float16_training/three_mistakes.py [--workdir runs/float16_training]

1. float16 weights (``model.half()``) trained with Adam: its eps (1e-8) is 0 in float16, so a zero gradient
   divides by 0 in the first step. nanprobe warns when the optimizer is attached, before any NaN, and the
   bundle's verdict names Adam's step.
2. float32 weights under ``torch.autocast(float16)`` without a GradScaler, on regression targets in the tens of
   thousands: the backward's gradients creep up to float16's max. nanprobe warns when they pass a tenth of
   it, long before the backward overflows, and the verdict is ``dtype_overflow`` of the backward.
3. The same run with ``torch.amp.GradScaler``: it stays finite. nanprobe's one remark is true: the outputs,
   fitting targets that large, come within a tenth of float16's max (normalised targets, or bfloat16, remove it).

Each case prints what nanprobe reported and the facts checked; the exit status is 1 when a fact did not hold.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import nanprobe
from nanprobe.postmortem.bundle import load_bundle


@dataclass
class Outcome:
    name: str
    steps: int
    failed_at: int | None
    warnings: list[nanprobe.monitoring.warning.EarlyWarning]
    bundles: list[Path]


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 1))


def _fit(name: str, workdir: Path, model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
         *, autocast: bool = False, scaler: torch.amp.GradScaler | None = None, steps: int = 60) -> Outcome:
    """The README's loop: the loss checked, the gradients checked, the optimizer (and scaler) attached."""
    losses: list[float] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # printed below instead
        with nanprobe.monitor(model, out_dir=workdir / name, optimizer=opt, scaler=scaler, on_nonfinite="dump",
                              run_name=name) as mon:
            for _ in range(steps):
                with torch.autocast("cpu", dtype=torch.float16, enabled=autocast):
                    loss = ((model(x) - y) ** 2).mean()
                mon.check_loss(loss)
                losses.append(float(loss))
                if not math.isfinite(losses[-1]):
                    break
                opt.zero_grad()
                (scaler.scale(loss) if scaler is not None else loss).backward()
                mon.after_backward()
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                mon.step()
    failed = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
    return Outcome(name, len(losses), failed, list(mon.warnings), mon.bundles)


def half_weights_with_adam(workdir: Path) -> Outcome:
    model = _net().half()
    x, y = torch.randn(32, 16).half(), torch.randn(32, 1).half()
    return _fit("half-adam", workdir, model, torch.optim.Adam(model.parameters(), lr=1e-3), x, y)


def _targets() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(64, 16, generator=gen), torch.randn(64, 1, generator=gen) * 1e4  # e.g. prices


def autocast_without_scaler(workdir: Path) -> Outcome:
    model = _net()
    x, y = _targets()
    return _fit("autocast-no-scaler", workdir, model, torch.optim.SGD(model.parameters(), lr=3e-5), x, y,
                autocast=True)


def autocast_with_scaler(workdir: Path) -> Outcome:
    model = _net()
    x, y = _targets()
    return _fit("autocast-scaler", workdir, model, torch.optim.SGD(model.parameters(), lr=3e-5), x, y,
                autocast=True, scaler=torch.amp.GradScaler("cpu", init_scale=1.0))


def _verdict(o: Outcome) -> nanprobe.report.Verdict | None:
    return load_bundle(o.bundles[0]).report.verdict if o.bundles else None


def facts(cases: list[Outcome]) -> list[tuple[str, bool]]:
    half, no_scaler, scaler = cases
    v1, v2 = _verdict(half), _verdict(no_scaler)
    first2 = next((w for w in no_scaler.warnings if w.signal == "grad_absmax"), None)
    return [
        ("1: warned at step 0, before the first NaN, about Adam's eps in float16",
         bool(half.warnings) and half.warnings[0].signal == "optimizer" and half.warnings[0].step == 0
         and half.failed_at is not None and half.failed_at > 0),
        ("1: the verdict is nonfinite_parameter, made by Adam's step",
         v1 is not None and v1.cause == "nonfinite_parameter" and v1.root is not None
         and (v1.root.evidence or "").startswith("Adam.step()")),
        ("2: warned about the gradients' |max| at least 5 steps before the failing backward",
         first2 is not None and bool(no_scaler.bundles)
         and load_bundle(no_scaler.bundles[0]).report.step - first2.step >= 5),
        ("2: the verdict is dtype_overflow of the backward, fixed by a GradScaler",
         v2 is not None and v2.cause == "dtype_overflow" and "GradScaler" in v2.fix),
        ("3: with a GradScaler the run stays finite; the only warning is the outputs nearing float16's max",
         scaler.failed_at is None and not scaler.bundles
         and all(w.signal == "output_absmax" for w in scaler.warnings)),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--workdir", default="runs/float16_training", help="where the bundles are written")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    torch.set_num_threads(1)
    runs: list[Callable[[Path], Outcome]] = [half_weights_with_adam, autocast_without_scaler, autocast_with_scaler]
    cases = [run(workdir) for run in runs]
    for o in cases:
        print(f"== {o.name}: {o.steps} steps, " + (f"NaN loss at step {o.failed_at}" if o.failed_at is not None
                                                   else "finite throughout"))
        for w in o.warnings[:2]:
            print(f"   warning at step {w.step} ({w.signal}): {w.message}")
        verdict = _verdict(o)
        if verdict is not None:
            print(f"   bundle {o.bundles[0]}: {verdict.cause}: {verdict.summary}")
            print(f"   fix: {verdict.fix}")
    checked = facts(cases)
    for text, ok in checked:
        print(f"{'held' if ok else 'FAILED'}: {text}")
    return 0 if all(ok for _, ok in checked) else 1


if __name__ == "__main__":
    sys.exit(main())
