"""A GradScaler in use is understood: its deliberately skipped overflow steps are recorded, never reported, a
loss scale that keeps falling is warned about, and gradients are unscaled once. CPU fp16 autocast with a real
``torch.amp.GradScaler("cpu")`` (Lightning turns ``precision="16-mixed"`` into bf16 on CPU, so the plugin is
passed explicitly; nothing is stubbed)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from nanprobe import monitor
from nanprobe.monitoring.monitor import GrowthWarning, MonitorWarning, NonFiniteWarning
from nanprobe.postmortem.bundle import load_bundle

OURS = (MonitorWarning, NonFiniteWarning)


def _lightning_fp16_fit(tmp_path: Path, init_scale: float, steps: int) -> tuple:
    pytest.importorskip("lightning")
    from lightning.pytorch.plugins import MixedPrecision

    from nanprobe.integrations.lightning import NanprobeCallback
    from tests.integrations.lit_models import LitLogNet, loader, trainer

    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    callback = NanprobeCallback(tmp_path)
    fit = trainer([callback], steps, plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit.fit(LitLogNet(), loader(steps))
    return callback.monitor, scaler, caught


def test_lightning_fp16_skipped_steps_are_recorded_not_reported(tmp_path: Path) -> None:
    mon, scaler, caught = _lightning_fp16_fit(tmp_path, init_scale=2.0 ** 20, steps=12)
    history = mon.history.tail()
    skipped = [row["step"] for row in history if row.get("scaler_skipped")]
    assert skipped[0] == 0 and skipped[-1] < 10  # the first steps overflow until the scale fits
    assert [w for w in caught if issubclass(w.category, (*OURS, GrowthWarning))] == []
    assert mon.failures == [] and mon.bundles == [] and not any(tmp_path.iterdir())
    assert mon.signals.scaler is scaler and mon.current_step == 12
    scales = {row["step"]: row["loss_scale"] for row in history}
    assert scales[0] == 2.0 ** 20 and all(scales[s + 1] == scales[s] / 2 for s in skipped)  # halved at each skip
    assert all(scales[s + 1] == scales[s] for s in range(11) if s not in skipped)
    # gradients Lightning unscaled before on_before_optimizer_step are not divided by the scale a second time
    clean = [row for row in history if not row.get("scaler_skipped")]
    assert all(1e-3 < row["grad_norm"] < 1e3 for row in clean)


def test_a_scaler_calibrating_down_from_a_huge_initial_scale_is_not_warned_about(tmp_path: Path) -> None:
    """2^40 halves some 25 times before the steps fit: that is the scaler doing its job, not a run in trouble."""
    mon, scaler, caught = _lightning_fp16_fit(tmp_path, init_scale=2.0 ** 40, steps=30)
    skipped = [row["step"] for row in mon.history.tail() if row.get("scaler_skipped")]
    assert len(skipped) >= 20 and scaler.get_scale() >= 1.0
    assert [w for w in caught if issubclass(w.category, (*OURS, GrowthWarning))] == [] and mon.warnings == []


def test_a_loss_scale_that_keeps_falling_is_warned_about_once(tmp_path: Path) -> None:
    """Gradients that double every step: the scaler halves at every step and falls below 1 (even unscaled
    gradients overflow float16): one warning about the loss scale, no failure."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # the weights stay: only the loss's factor grows
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    x = torch.randn(4, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with monitor(model, tmp_path, optimizer=opt, scaler=scaler) as mon:
            for step in range(40):
                with torch.autocast("cpu", dtype=torch.float16):
                    out = model(x)
                loss = mon.check_loss(out.float().pow(2).mean() * 2.0 ** step)
                scaler.scale(loss).backward()
                mon.after_backward()
                scaler.step(opt)
                scaler.update()
                opt.zero_grad()
                mon.step()
    assert scaler.get_scale() < 1.0
    signals = [w.signal for w in mon.warnings]
    assert signals.count("loss_scale") == 1, signals
    falling = [str(w.message) for w in caught if issubclass(w.category, GrowthWarning) and "loss scale" in
               str(w.message)]
    assert len(falling) == 1 and "the loss scale fell" in falling[0]
    assert mon.failures == [] and [w for w in caught if issubclass(w.category, OURS)] == []


def test_the_plain_monitor_with_a_scaler_unscaled_before_clipping(tmp_path: Path) -> None:
    """The PyTorch recipe: scale, backward, unscale_, clip, step. after_backward after unscale_ reads the real
    gradient norm; on the overflow step it records the skip."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    norms = []
    with monitor(model, tmp_path, optimizer=opt, scaler=scaler) as mon:
        for step in range(3):
            with torch.autocast("cpu", dtype=torch.float16):
                loss = model(torch.randn(4, 8)).float().pow(2).mean()
            if step == 1:
                loss = loss * 1e30  # scaled, it overflows: the scaler skips this step
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9)))
            mon.after_backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
            mon.step()
    history = mon.history.tail()
    assert history[0]["grad_norm"] == pytest.approx(norms[0], rel=1e-4)
    assert history[1].get("scaler_skipped") == 1.0 and "grad_norm" not in history[1]
    assert history[2]["grad_norm"] == pytest.approx(norms[2], rel=1e-4) and not math.isfinite(norms[1])
    assert mon.failures == []


def test_a_gradient_failure_is_diagnosed_in_the_autocast_region_its_forward_ran_in(tmp_path: Path) -> None:
    """Lightning runs the forward under bf16 autocast and the gradient check after it: the diagnosis re-enters
    the forward's autocast region, so its "autocast off" replay is a real comparison, not skipped."""
    pytest.importorskip("lightning")
    from torch.utils.data import DataLoader, TensorDataset

    from nanprobe.integrations.lightning import NanprobeCallback
    from tests.integrations.lit_models import BAD_ROW, BATCH, LitLogNet, trainer

    class WithNorm(nn.Module):
        def forward(self, h: torch.Tensor) -> torch.Tensor:
            return torch.cat([h, (h * h).sum(-1, keepdim=True).sqrt()], -1)  # finite at a zero row, its gradient not

    class NormNet(LitLogNet):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(8, 8, bias=False), WithNorm(), nn.Linear(9, 1))

    x = torch.rand(4 * BATCH, 8, generator=torch.Generator().manual_seed(0)) + 0.5
    x[2 * BATCH + BAD_ROW] = 0.0  # step 2
    callback = NanprobeCallback(tmp_path, on_nonfinite="dump")
    fit = trainer([callback], 4, precision="bf16-mixed")
    fit.fit(NormNet(), DataLoader(TensorDataset(x, torch.randn(4 * BATCH)), batch_size=BATCH))
    failure = callback.monitor.failures[0]
    assert (failure.step, failure.phase) == (2, "backward")
    report = load_bundle(failure.bundle).report
    assert report.first_nonfinite.phase == "backward"
    assert not any("autocast off: skipped" in line for line in report.verdict.evidence), report.verdict.evidence
    assert any(entry.variant == "autocast off" for entry in report.replay)
