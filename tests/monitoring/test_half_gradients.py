"""A backward in float16 without a GradScaler: the gradients creep up to float16's max and one backward
overflows (unnormalised regression targets under autocast). The monitor records the gradients' |max| in that
case only, warns when it nears the max, and the bundle's verdict is dtype_overflow of the backward from the
history, which `nanprobe replay` repeats under the recorded autocast region."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from nanprobe.cli.main import main
from nanprobe.diagnosis.from_history import history_verdict
from nanprobe.postmortem.bundle import load_bundle
from tests.monitoring.loops import train_under_monitor

FACTORY = "tests.monitoring.test_half_gradients:make_net"


def make_net() -> nn.Module:
    return nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 1))


PICKY = {"on": False}


class Picky(nn.Sequential):
    """Raises under CPU autocast while PICKY["on"]: a stand-in for a kernel the replay's device lacks in float16."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if PICKY["on"] and torch.is_autocast_enabled("cpu"):
            raise RuntimeError("no float16 kernel here")
        return super().forward(x)


def make_picky() -> nn.Module:
    return Picky(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 1))


def _fit(tmp_path: Path, *, half: bool = True, scaler: bool = False, target: float = 1e4, lr: float = 1e-4,
         steps: int = 60, factory: str = FACTORY) -> tuple[Any, list[float]]:
    """SGD on targets of size ``target``, the forward under CPU autocast float16 when ``half``."""
    torch.manual_seed(0)
    model = make_picky() if factory.endswith("make_picky") else make_net()
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 16, generator=gen), torch.randn(64, 1, generator=gen) * target
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    amp = torch.amp.GradScaler("cpu", init_scale=1.0) if scaler else None
    return train_under_monitor(tmp_path, model, opt, x, y, steps, autocast=half, scaler=amp, quiet=True,
                               factory=factory, run_name="fit", time_budget=None)


def test_float16_gradients_that_overflow_warn_early_and_explain_the_bundle(tmp_path: Path) -> None:
    mon, losses = _fit(tmp_path)
    (bundle,) = mon.bundles
    report = load_bundle(bundle).report
    failing = report.step
    assert report.monitor.phase == "backward" and report.monitor.reproduced is False
    # the overflowed gradient puts Inf into 0.weight; tanh saturates it, and the loss turns NaN a few steps later
    assert failing < len(losses) - 1 and not math.isfinite(losses[-1])
    assert report.monitor.call.dtype == "float16" and report.monitor.call.autocast == ["cpu:float16"]
    peaks = [row["grad_absmax"] for row in report.history if "grad_absmax" in row]
    assert len(peaks) == failing  # every finite backward before the failing one
    assert 0.1 * 65504 < peaks[-1] < 65504
    warning = next(w for w in mon.warnings if w.signal == "grad_absmax")
    assert failing - warning.step >= 5
    assert "float16's max" in warning.message and "GradScaler" in warning.message
    verdict = report.verdict
    assert verdict.cause == "dtype_overflow"
    assert verdict.root.parameter in dict(make_net().named_parameters())
    assert verdict.root.step == warning.step  # from where the gradients were within reach of the max
    assert "GradScaler" in verdict.fix and "bfloat16" in verdict.fix
    assert any(f"{peaks[-1]:.3g} at step {failing - 1}" in line for line in verdict.evidence)


def test_with_a_gradscaler_or_in_float32_no_gradient_max_is_recorded(tmp_path: Path) -> None:
    for name, kwargs in (("scaler", {"scaler": True, "steps": 20}), ("fp32", {"half": False, "steps": 20})):
        mon, losses = _fit(tmp_path / name, **kwargs)
        rows = mon.history.tail()
        assert len(rows) == 20 and all(math.isfinite(v) for v in losses)
        assert not any("grad_absmax" in row for row in rows)
        assert "grad_norm" in rows[-1]
        assert not [w for w in mon.warnings if w.signal == "grad_absmax"]


def test_small_float16_gradients_record_their_max_and_never_warn(tmp_path: Path) -> None:
    mon, losses = _fit(tmp_path, target=1.0, lr=0.05, steps=40)
    peaks = [row["grad_absmax"] for row in mon.history.tail() if "grad_absmax" in row]
    assert len(peaks) == 40 and max(peaks) < 10 and all(math.isfinite(v) for v in losses)
    assert not mon.warnings and not mon.bundles


def test_replay_says_not_reproduced_with_the_history_verdict_under_the_recorded_autocast(tmp_path: Path) -> None:
    mon, _ = _fit(tmp_path / "b")
    (bundle,) = mon.bundles
    out, err, js = io.StringIO(), io.StringIO(), tmp_path / "replay.json"
    code = main(["replay", str(bundle), "--json", str(js), "--no-color"], stdout=out, stderr=err)
    text = " ".join(out.getvalue().split())
    assert code == 1, err.getvalue()
    assert "under autocast('cpu', dtype=float16) (recorded: cpu:float16), as the failing call ran" in err.getvalue()
    assert "NOT REPRODUCED: the recorded inf at step" in text
    assert "the history explains it (dtype_overflow): the backward overflowed float16" in text
    data = json.loads(js.read_text())
    assert data["verdict"]["cause"] == "dtype_overflow" and data["reproduced"] is False


def test_replay_falls_back_to_no_autocast_when_the_model_raises_under_it(tmp_path: Path) -> None:
    mon, _ = _fit(tmp_path / "b", factory="tests.monitoring.test_half_gradients:make_picky")
    (bundle,) = mon.bundles
    out, err = io.StringIO(), io.StringIO()
    PICKY["on"] = True
    try:
        code = main(["replay", str(bundle), "--no-color"], stdout=out, stderr=err)
    finally:
        PICKY["on"] = False
    assert code == 1, err.getvalue()
    assert "the model raised under autocast('cpu', dtype=float16)" in err.getvalue()
    assert "no float16 kernel here" in err.getvalue() and "replaying without autocast" in err.getvalue()
    assert "NOT REPRODUCED" in " ".join(out.getvalue().split())


def _rows(peaks: list[float], losses: list[float] | None = None) -> list[dict[str, float]]:
    rows: list[dict[str, float]] = [{"step": i, "grad_absmax": p} for i, p in enumerate(peaks)]
    for row, loss in zip(rows, losses or []):
        row["loss"] = loss
    return rows


@pytest.mark.parametrize(("peaks", "phase", "dtype", "cause"), [
    ([1e4, 2e4, 4e4], "backward", "float16", "dtype_overflow"),
    ([1e4, 2e4, 4e4], "forward", "float16", None),  # an output overflow re-creates from the batch: not ours
    ([10.0, 20.0, 40.0], "backward", "float16", None),  # far from the max
    ([1e4, 2e4, 4e4], "backward", "bfloat16", None),  # bfloat16's range is float32's
])
def test_the_history_verdict_names_a_float16_backward_only_near_its_max(
        peaks: list[float], phase: str, dtype: str, cause: str | None) -> None:
    verdict = history_verdict(_rows(peaks), phase=phase, dtype=dtype)
    assert (verdict.cause if verdict is not None else None) == cause


def test_divergence_outweighs_the_gradient_range_when_the_loss_grew_exponentially() -> None:
    steps = 40
    losses = [1.0] * 20 + [10 ** (0.3 * k) for k in range(1, steps - 19)]
    peaks = [5.0] * 20 + [min(60000.0, 5.0 * 10 ** (0.3 * k)) for k in range(1, steps - 19)]
    verdict = history_verdict(_rows(peaks, losses), phase="backward", dtype="float16")
    assert verdict is not None and verdict.cause == "training_divergence"
    assert verdict.root.step == 19  # the last step at its floor
    assert any(line.startswith("rejected dtype_overflow: weaker evidence") for line in verdict.evidence)
