"""The early warning's rules beyond plain growth: clipping (measured, not configured), the weights' norm, the
first steps, one-step spikes, the loss's own dtype; and the divergence verdict's onset and fix that use them."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from nanprobe.diagnosis.dynamics import analyze
from nanprobe.monitoring.warning import GRACE, GrowthWatch
from tests.monitoring.loops import train_under_monitor


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))


def _rows(mon: object, key: str) -> dict[int, float]:
    return {r["step"]: r[key] for r in mon.history.tail() if isinstance(r.get(key), float)}  # type: ignore[attr-defined]


@pytest.mark.parametrize("scaled", [False, True], ids=["plain", "GradScaler"])
def test_the_clip_ratio_is_the_share_of_the_gradient_norm_the_step_used(tmp_path: Path, scaled: bool) -> None:
    """Clipped to 0.05: each step's ratio is 0.05 / its gradient norm (unscaled under a GradScaler too);
    not clipped: 1."""
    x, y = torch.randn(32, 8, generator=torch.Generator().manual_seed(1)), torch.ones(32, 1) * 3
    for clip in (0.05, None):
        net = _net()
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10) if scaled else None
        mon, _ = train_under_monitor(tmp_path / str(clip), net, torch.optim.SGD(net.parameters(), lr=0.01), x, y,
                                     6, autocast=scaled, scaler=scaler, clip=clip, quiet=True)
        ratios, norms = _rows(mon, "clip_ratio"), _rows(mon, "grad_norm")
        assert len(ratios) >= 5, ratios
        for step, ratio in ratios.items():
            expected = min(1.0, 0.05 / norms[step]) if clip is not None else 1.0
            assert ratio == pytest.approx(expected, rel=2e-3), (step, ratio, norms[step])
        if clip is not None:
            assert max(ratios.values()) < 0.5


def test_the_weight_norm_is_recorded_after_each_step(tmp_path: Path) -> None:
    """Every parameter here has fewer than 1024 values, so the sample is all of them: with lr 0 the recorded norm
    is the weights' norm; with lr 0.1 it moves."""
    for lr in (0.0, 0.1):
        net = _net()
        full = float(torch.linalg.vector_norm(torch.cat([p.detach().reshape(-1) for p in net.parameters()])))
        mon, _ = train_under_monitor(tmp_path / str(lr), net, torch.optim.SGD(net.parameters(), lr=lr),
                                     torch.randn(16, 8), torch.randn(16, 1), 5, quiet=True)
        norms = _rows(mon, "weight_norm")
        assert sorted(norms) == [0, 1, 2, 3]  # the last step's is read back with a next step that never comes
        if lr == 0.0:
            assert all(v == pytest.approx(full, rel=1e-6) for v in norms.values()), (norms, full)
        else:
            assert all(math.isfinite(v) for v in norms.values()) and norms[3] != pytest.approx(full, rel=1e-6)


def _growth(watch: GrowthWatch, steps: range, clip: float | None = None) -> list[str]:
    """Loss and gradient norm growing 2x per step from step 20; ``clip``: the clip ratio of every step."""
    found = []
    for step in steps:
        value = 1.0 if step < 20 else 2.0 ** (step - 19)
        late = {"update_ratio": 0.01} if clip is None else {"update_ratio": 0.01, "clip_ratio": clip}
        found += [w.signal for w in watch.update(step, late)]
        found += [w.signal for w in watch.update(step, {"loss": value, "grad_norm": value}, torch.float32)]
    return found


def test_growth_under_clipping_is_not_projected_for_sgd_but_is_for_adam() -> None:
    """SGD's clipped step is bounded, so the weights cannot compound; Adam's step is about lr either way."""
    assert _growth(GrowthWatch(), range(40)) == ["grad_norm", "loss"]
    sgd = GrowthWatch()
    sgd.clipping_bounds_steps = True
    assert _growth(sgd, range(40), clip=0.2) == []
    assert _growth(sgd, range(40, 41), clip=1.0) == ["grad_norm", "loss"]  # no longer clipped, still growing
    adam = GrowthWatch()
    assert _growth(adam, range(40), clip=0.2) == ["grad_norm", "loss"]


def _weights(losses: list[float], norms: list[float]) -> list[str]:
    watch = GrowthWatch()
    found = []
    for step, (loss, norm) in enumerate(zip(losses, norms)):
        found += [w.signal for w in watch.update(step, {"loss": loss}, torch.float32)]
        found += [w.signal for w in watch.update(step, {"weight_norm": norm})]
    return found


def test_a_loss_rising_while_the_weights_grow_warns_and_a_catapult_that_shrinks_them_does_not() -> None:
    base = [1.0 - 0.01 * s for s in range(30)]
    rising = [0.7 * 1.6 ** k for k in range(1, 6)]  # 1.1 .. 7.3: 0.8 decades above the low in 5 steps
    flat = [5.0 + 0.01 * s for s in range(30)]
    growing = flat + [flat[-1] * 1.04 ** k for k in range(1, 6)]  # 4% per step: 8% in 2 steps
    shrinking = flat + [flat[-1] * 0.99 ** k for k in range(1, 6)]  # the catapult moves them back
    assert _weights(base + rising, growing) == ["weight_norm"]
    assert _weights(base + rising, shrinking) == []
    assert _weights(base + [0.7] * 5, growing) == []  # the weights grow, the loss does not: no warning


def test_early_steps_need_twice_the_decades_not_silence() -> None:
    """Outputs exploding from step 0 warn within the first steps; a 3.5-decade initial transient that then
    settles (above the 3 decades that count later on) does not."""
    def feed(values: list[float]) -> list[int]:
        watch = GrowthWatch()
        return [w.step for s, v in enumerate(values) for w in watch.update(s, {"output_absmax": v}, torch.float32)]

    exploding = [10.0 ** (1.5 * s) for s in range(12)]
    assert feed(exploding) and feed(exploding)[0] < GRACE
    transient = [10.0 ** (0.7 * s) for s in range(6)] + [3e3 * 0.9 ** s for s in range(20)]
    assert feed(transient) == []


def test_a_one_step_spike_is_not_a_rate_to_project() -> None:
    def feed(values: list[float]) -> list[str]:
        watch = GrowthWatch()
        return [w.signal for s, v in enumerate(values) for w in watch.update(s, {"loss": v}, torch.float32)]

    noisy = [1.0 + 0.1 * (s % 3) for s in range(30)]
    assert feed([*noisy, 1.5, 3e3]) == []  # 3.3 decades, 3.1 of them in the last step
    assert feed(noisy + [10 ** (0.7 * k) for k in range(1, 6)]) == ["loss"]  # 3.5 decades over 5 steps


def test_the_loss_is_held_to_its_own_dtype_not_the_models() -> None:
    """A float16 model's loss that met float32 targets is float32: 1.5 decades of growth to 50 is far from
    its max; a float16 loss at 50 has used a fifth of float16's decades."""
    losses = [1.0] * 20 + [1.0 * 10 ** (0.3 * k) for k in range(1, 7)]

    def feed(loss_dtype: torch.dtype) -> list[str]:
        watch = GrowthWatch()
        return [w.signal for s, v in enumerate(losses) for w in
                watch.update(s, {"loss": v}, torch.float16, loss_dtype)]

    assert feed(torch.float16) == ["loss"]
    assert feed(torch.float32) == []


def _history(losses: list[float], lrs: list[float], clip: list[float] | None = None) -> list[dict[str, float]]:
    rows = []
    for s, (loss, lr) in enumerate(zip(losses, lrs)):
        row = {"step": s, "loss": loss, "grad_norm": loss, "lr": lr}
        if clip is not None:
            row["clip_ratio"] = clip[s]
        rows.append(row)
    return rows


def test_a_learning_rate_raised_after_a_noisy_floor_dates_the_divergence() -> None:
    """Minibatch noise puts the loss's floor early (step 5 was a lucky batch); the loss had not risen before the
    learning rate went up 40x at step 60, where the growth began."""
    noise = [1.0, 1.3, 0.9, 1.2, 1.1]
    losses = [noise[s % 5] * (0.5 if s == 5 else 1.0) for s in range(60)] + [10 ** (0.3 * k) for k in range(1, 15)]
    lrs = [0.02] * 60 + [0.8] * 14
    found = analyze(_history(losses, lrs))
    assert found is not None and found.onset == 60, found
    assert any("rose from 0.02 to 0.8 at step 60" in note for note in found.notes)


def test_the_fix_does_not_suggest_clipping_a_run_that_was_clipped() -> None:
    losses = [1.0] * 30 + [10 ** (0.3 * k) for k in range(1, 15)]
    lrs = [0.1] * 44
    plain = analyze(_history(losses, lrs))
    clipped = analyze(_history(losses, lrs, clip=[1.0] * 30 + [0.3] * 14))
    assert plain is not None and "clip gradients at about" in plain.fix()
    assert clipped is not None and clipped.clipped == (43, pytest.approx(0.3))
    fix = clipped.fix()
    assert "clip gradients at about" not in fix and "already clipped (step 43 used 0.3 of their norm)" in fix


def test_the_weights_norm_growing_since_the_onset_is_named_as_evidence() -> None:
    losses = [1.0] * 30 + [10 ** (0.3 * k) for k in range(1, 15)]
    rows = _history(losses, [0.1] * 44)
    for row in rows:
        row["weight_norm"] = 5.0 if row["step"] <= 30 else 5.0 * 1.2 ** (row["step"] - 30)
    found = analyze(rows)
    assert found is not None and found.onset == 29  # the last step on the loss's floor
    assert any(note.startswith("the weights' norm grew from 5 (step 29) to 53.5 (step 43)") for note in found.notes)
    for row in rows:
        row["weight_norm"] = 5.0
    assert not any("weights' norm" in note for note in analyze(rows).notes)  # type: ignore[union-attr]


@pytest.mark.parametrize("where", ["after_backward", "optimizer_step"])
def test_a_failure_inside_the_step_measurements_is_nanprobes_not_the_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """nanprobe's own measurement raises at every step, after backward (the clip ratio's gradient sample) or in
    the optimizer's step hooks (the update ratio's weight sample): training goes on bitwise as the bare run, one
    MonitorWarning says so, and what could not be measured is missing."""
    import nanprobe.monitoring.signals as signals
    from nanprobe.monitoring.monitor import MonitorWarning

    def broken(*args: object) -> object:
        raise RuntimeError("sample failed")

    x, y = torch.randn(16, 8, generator=torch.Generator().manual_seed(2)), torch.randn(16, 1)
    bare = _net()
    opt = torch.optim.SGD(bare.parameters(), lr=0.1)
    for _ in range(4):
        opt.zero_grad()
        ((bare(x) - y) ** 2).mean().backward()
        opt.step()
    if where == "after_backward":
        monkeypatch.setattr(signals, "_grad_sample", broken)
    else:
        monkeypatch.setattr(signals.Signals, "_sampled", broken)
    net = _net()
    with pytest.warns(MonitorWarning, match="could not measure part of a training step.*sample failed") as caught:
        mon, losses = train_under_monitor(tmp_path, net, torch.optim.SGD(net.parameters(), lr=0.1), x, y, 4)
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), bare.parameters()))
    assert sum("could not measure" in str(w.message) for w in caught) == 1
    hook = "_sample_at_backward" if where == "after_backward" else "_before_step"
    assert mon.signals.errors[0] == f"{hook}: RuntimeError: sample failed"  # type: ignore[attr-defined]
    assert _rows(mon, "clip_ratio") == {}
    assert (_rows(mon, "update_ratio") == {}) == (where == "optimizer_step")


def _wide_hidden(scale: float) -> nn.Module:
    """A hidden layer ``scale`` times too large, then a LayerNorm: the model's outputs stay small."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.LayerNorm(32), nn.Linear(32, 1))
    with torch.no_grad():
        model[2].weight.mul_(scale)
    return model


@pytest.mark.parametrize(("scale", "depth", "warned"), [(3000.0, "full", True), (3000.0, "sentinel", False),
                                                        (1.0, "full", False)])
def test_a_layer_near_float16s_max_in_a_full_depth_snapshot_is_warned(tmp_path: Path, scale: float, depth: str,
                                                                     warned: bool) -> None:
    """Under autocast float16 the hidden layer reaches 2e4 (31% of float16's max) while the outputs, after the
    LayerNorm, stay below 10: only the per-layer snapshot (depth="full") sees it."""
    model = _wide_hidden(scale)
    x, y = torch.randn(16, 8, generator=torch.Generator().manual_seed(2)) * 10, torch.randn(16, 1)
    mon, losses = train_under_monitor(tmp_path, model, torch.optim.SGD(model.parameters(), lr=1e-3), x, y, 12,
                                      autocast=True, quiet=True, depth=depth, every=5)
    assert all(math.isfinite(v) for v in losses) and max(_rows(mon, "output_absmax").values()) < 10
    layer = [w for w in mon.warnings if w.signal == "layer_absmax"]
    assert len(layer) == (1 if warned else 0), mon.warnings
    if warned:
        assert layer[0].step == 0 and layer[0].message.startswith("layer 2 reaches |max| 2.0"), layer[0].message
        assert "31% of float16's max 6.55e+04" in layer[0].message


def test_a_failure_reading_the_layer_snapshot_is_nanprobes_not_the_runs(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(result: object) -> None:
        raise RuntimeError("layer peak broke")

    monkeypatch.setattr("nanprobe.monitoring.snapshots.layer_peak", broken)
    model = _wide_hidden(3000.0)
    x, y = torch.randn(16, 8, generator=torch.Generator().manual_seed(2)) * 10, torch.randn(16, 1)
    mon, losses = train_under_monitor(tmp_path, model, torch.optim.SGD(model.parameters(), lr=1e-3), x, y, 12,
                                      autocast=True, quiet=True, depth="full", every=5)
    assert len(losses) == 12 and all(math.isfinite(v) for v in losses)  # the run went on
    assert [w for w in mon.warnings if w.signal == "layer_absmax"] == [] and len(mon.layer_history) == 0
