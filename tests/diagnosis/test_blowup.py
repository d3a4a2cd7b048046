"""Runs that blow up in one to three steps, too few for the growth fit. A learning rate orders of magnitude too
high (3e3 for 3e-3): training_divergence dated at the step whose update blew the weights up, the fix the learning
rate. One batch with outliers that raises the loss or the gradient norm at once after healthy updates: dated at
that batch's step, the fix the batch and clipping, not the learning rate."""

from __future__ import annotations

import io
import json
import math
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from nanprobe.cli.main import main
from nanprobe.diagnosis.dynamics import BLOWUP_STEPS, analyze, batch_spike, blowup
from nanprobe.errors import GrowthError
from nanprobe.postmortem.bundle import load_bundle
from tests.monitoring.loops import train_under_monitor


def layer_norm_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.LayerNorm(32), nn.GELU(), nn.Linear(32, 32), nn.LayerNorm(32), nn.GELU(),
                         nn.Linear(32, 1))


def test_a_learning_rate_of_3e3_is_a_divergence_from_step_0_not_an_overflow_in_layernorm(tmp_path: Path) -> None:
    net = layer_norm_net()
    x, y = torch.randn(64, 8, generator=torch.Generator().manual_seed(1)), torch.randn(64, 1)
    mon, losses = train_under_monitor(tmp_path / "b", net, torch.optim.SGD(net.parameters(), lr=3e3), x, y, 20,
                                      quiet=True, factory="tests.diagnosis.test_blowup:layer_norm_net")
    assert not math.isfinite(losses[-1]) and len(losses) <= BLOWUP_STEPS + 1, losses  # too short for a fit
    (bundle,) = mon.bundles
    verdict = load_bundle(bundle).report.verdict
    assert verdict is not None and verdict.cause == "training_divergence", verdict
    assert verdict.root is not None and verdict.root.step == 0
    assert "lower it by orders of magnitude" in verdict.fix and "meant as 0.003" in verdict.fix, verdict.fix
    assert "clip gradients" not in verdict.fix  # at lr 3e3 a clipped step is still thousands of times too large
    assert any("changed the weights by" in e and "of their norm" in e for e in verdict.evidence), verdict.evidence
    # nanprobe replay weighs the bundle's history the same way
    js = tmp_path / "replay.json"
    main(["replay", str(bundle), "--json", str(js), "--no-color"], stdout=io.StringIO(), stderr=io.StringIO())
    replayed = json.loads(js.read_text())["verdict"]
    assert (replayed["cause"], replayed["root"]["step"]) == ("training_divergence", 0), replayed


def _rows(losses: list[float], ratios: list[float | None]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = [{"step": s, "loss": v, "lr": 0.1} for s, v in enumerate(losses)]
    for row, ratio in zip(rows, ratios):
        if ratio is not None:
            row["update_ratio"] = ratio
    return [*rows, {"step": len(rows), "loss": "nan", "lr": 0.1}]


def test_a_rise_after_a_step_as_large_as_the_weights_is_a_blowup_dated_at_that_step() -> None:
    found = analyze(_rows([1.0, 0.9, 5e9], [1e-3, 0.8, None]))  # too few steps for the fit
    assert found is not None and found.onset == 1 and found.blown == (1, 0.8) and found.lr == 0.1
    assert found.growths[0].signal == "loss" and round(found.growths[0].decades, 1) == 9.7
    assert "lower it by orders of magnitude" in found.fix() and "minus sign" not in found.fix()  # lr 0.1


def test_one_batch_that_makes_a_huge_loss_before_any_large_update_is_not_a_blowup() -> None:
    """The loss rose at step 4 after steps whose updates were a thousandth of the weights: the batch, not the
    learning rate (its own step's update is large, but it came after the rise)."""
    assert blowup(_rows([1.0, 1.1, 0.9, 1.0, 5e9], [1e-3, 1e-3, 1e-3, 1e-3, 1.0])) is None
    # without any update ratio one rising step is not enough, two are
    assert blowup(_rows([1.0, 1.1, 0.9, 1.0, 5e9], [None] * 5)) is None
    two = blowup(_rows([1.0, 1.1, 0.9, 3e4, 5e9], [None] * 5))
    assert two is not None and two.onset == 2 and two.blown is None


def test_a_rise_of_less_than_three_decades_or_one_that_is_not_the_end_is_not_a_blowup() -> None:
    assert blowup(_rows([1.0, 1.0, 1.0, 9e2], [1e-3, 1e-3, 0.9, None])) is None  # 2.95 decades
    assert blowup(_rows([1.0, 1.0, 1.0, 1e6, 1e2], [1e-3, 1e-3, 0.9, 0.9, None])) is None  # came back down
    # the fit decides when the history is long enough: analyze() gives the fit's growth, not a blow-up
    grown = analyze(_rows([1.0 * 1.6 ** s for s in range(40)], [1e-3] * 40))
    assert grown is not None and grown.blown is None and grown.growths[0].decades > 7


def test_a_blowup_reads_the_history_as_json_holds_it() -> None:
    """A bundle's history keeps non-finite values as strings ("nan", "inf"); they are skipped, not read."""
    rows = _rows([0.7, 5e22], [1.0, None])
    rows[1]["update_ratio"] = "nan"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = analyze(rows)
    assert found is not None and found.onset == 0 and found.blown == (0, 1.0)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))


def _corrupt_row_run(tmp_path: Path, scale: float, *, targets: bool = False, adam: bool = False,
                     steps: int = 60, net: nn.Module | None = None, clip: float | None = None,
                     **monitor_kwargs: object) -> tuple[object, list[float]]:
    """Minibatches of 32; row 5 of step 30's batch is ``scale`` times too large (an outlier in the data): in the
    inputs, or in the targets (which the model never sees: the loss is computed outside it). SGD at lr 0.05, or
    Adam at lr 1e-3. ``net``: the model to train (a fresh :func:`_mlp` by default); ``clip``: the gradients' norm
    is clipped to it before each step."""
    net = net if net is not None else _mlp()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3) if adam else torch.optim.SGD(net.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(0)
    xs, ys = torch.randn(60 * 32, 8, generator=g), torch.randn(60 * 32, 1, generator=g)
    (ys if targets else xs)[30 * 32 + 5] *= scale
    return train_under_monitor(tmp_path, net, opt, xs, ys, steps, quiet=True, clip=clip, batch=32,
                               **monitor_kwargs)


@pytest.mark.parametrize(("scale", "signal"), [(1e8, "the loss"), (1e3, "the gradient norm")])
def test_one_batch_with_an_outlier_is_dated_at_its_step_and_the_fix_is_the_batch(tmp_path: Path, scale: float,
                                                                                signal: str) -> None:
    """x 1e8: the batch's loss jumps 11 decades; x 1e3: its loss rises one decade but its gradient norm three.
    Either way its update blows the weights up and the run fails a step or three later."""
    mon, losses = _corrupt_row_run(tmp_path, scale)
    assert not math.isfinite(losses[-1]) and 31 <= len(losses) - 1 <= 33, losses[28:]
    verdict = load_bundle(mon.bundles[0]).report.verdict
    assert verdict is not None and verdict.cause == "training_divergence", verdict
    assert verdict.root is not None and verdict.root.step == 30, verdict.root
    assert verdict.root.evidence.startswith(f"the batch of step 30 raised {signal} from"), verdict.root.evidence
    assert "row 5 of its input batch.args[0] has |max|" in verdict.root.evidence  # found while the batch was there
    key = "loss" if signal == "the loss" else "grad_norm"
    rise = next(e for e in verdict.evidence if e.startswith("for training_divergence: "))  # the strongest first
    assert rise.startswith(f"for training_divergence: {key} grew") and "from step 29" in rise, verdict.evidence
    assert verdict.summary.startswith("one batch blew the run up")
    assert "drop or fix row 5 of that step's batch (batch.args[0]" in verdict.fix, verdict.fix
    assert "clip gradients at about" in verdict.fix and "lower it" not in verdict.fix, verdict.fix
    row = next(r for r in load_bundle(mon.bundles[0]).report.history if r["step"] == 30)
    assert (row["outlier_input"], row["outlier_row"]) == ("batch.args[0]", 5)
    assert row["outlier_absmax"] > scale and row["outlier_absmax"] > 100 * row["outlier_median"]
    # the bundle's Markdown shows it as one line under the history table, not as four mostly empty columns
    markdown = (mon.bundles[0] / "report.md").read_text()
    assert "- step 30's batch: row 5 of its input batch.args[0] has |max|" in markdown
    assert "outlier_row" not in markdown


def test_an_outlier_in_the_targets_the_model_never_saw_is_dated_but_not_located(tmp_path: Path) -> None:
    mon, _ = _corrupt_row_run(tmp_path, 1e8, targets=True)
    verdict = load_bundle(mon.bundles[0]).report.verdict
    assert verdict is not None and verdict.root is not None and verdict.root.step == 30, verdict
    assert "look in that step's batch for values far outside the others' range (inputs or targets)" in verdict.fix
    assert "row 5" not in verdict.fix


def test_nanprobes_own_failure_looking_for_the_outlier_is_never_the_runs(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(call: object) -> None:
        raise RuntimeError("outlier search broke")

    monkeypatch.setattr(sys.modules["nanprobe.monitoring.monitor"], "outlier_row", broken)
    mon, losses = _corrupt_row_run(tmp_path, 1e8)
    assert not math.isfinite(losses[-1]) and len(losses) == 32  # the run went on to its own failure
    assert any("the outlier row of step 30's batch: RuntimeError: outlier search broke" in e
               for e in mon.signals.errors), mon.signals.errors
    verdict = load_bundle(mon.bundles[0]).report.verdict
    assert verdict.root.step == 30 and "look in that step's batch" in verdict.fix


def test_a_spike_needs_healthy_updates_before_it_an_ordinary_start_and_to_stay_up() -> None:
    base = [1.0, 0.9, 1.1, 1.0, 0.8]
    spike = batch_spike(_rows([*base, 5e4, 1e9], [1e-3] * 7))
    assert spike is not None and (spike.step, spike.before, spike.after) == (5, 0.8, 5e4)
    assert batch_spike(_rows([*base, 5e4, 1e9], [1e-3] * 4 + [0.9, 1e-3, 1e-3])) is None  # the step before was huge
    assert batch_spike(_rows([*base[:-1], 30.0, 5e4, 1e9], [1e-3] * 7)) is None  # already rising
    assert batch_spike(_rows([*base, 5e4, 1.0], [1e-3] * 7)) is None  # came back down
    assert batch_spike(_rows([*base, 5e4, 1e9], [None] * 7)) is None  # no optimizer: nothing says the weights held
    assert batch_spike(_rows([*base, 5e2, 1e9], [1e-3] * 7)) is None  # less than 3 decades at once


def test_a_batch_whose_own_loss_overflows_is_that_batch_not_a_divergence(tmp_path: Path) -> None:
    """x 1e36: step 30's outputs reach 1e34 (finite) and the loss, their square, overflows in that same step. The
    hinge fit alone read a 35-decade 'growth from step 26'; the weights were never the problem."""
    mon, losses = _corrupt_row_run(tmp_path, 1e36)
    assert len(losses) == 31 and not math.isfinite(losses[-1])
    verdict = load_bundle(mon.bundles[0]).report.verdict
    assert verdict is not None and verdict.cause == "dtype_overflow", verdict
    assert verdict.root is not None and verdict.root.step == 30
    assert verdict.root.evidence.startswith("the batch of step 30 raised the outputs' |max| from")
    assert "row 5 of its input batch.args[0]" in verdict.root.evidence
    assert verdict.fix.startswith("drop or fix row 5 of that step's batch") and "learning rate" not in verdict.fix


def test_the_corrupt_batchs_gradient_is_warned_before_its_step_and_raise_stops_there(tmp_path: Path) -> None:
    """x 1e3: step 30's gradient norm jumps 3.3 decades. The warning comes at mon.after_backward() of step 30,
    before opt.step(): with on_warning="raise" the weights are those after step 29, as in a run that stopped
    there; with "warn" the warning names the row and comes 1 to 3 steps before the first Inf."""
    mon, losses = _corrupt_row_run(tmp_path / "warn", 1e3)
    spikes = [w for w in mon.warnings if w.signal == "grad_spike"]
    assert len(spikes) == 1 and spikes[0].step == 30 and len(losses) - 1 > 30, (mon.warnings, len(losses))
    assert "row 5 of its input batch.args[0]" in spikes[0].message
    stopped = _mlp()
    with pytest.raises(GrowthError, match="early warning at step 30: the batch of step 30 raised the gradient norm"):
        _corrupt_row_run(tmp_path / "raise", 1e3, net=stopped, on_warning="raise")
    reference = _mlp()  # the same run, stopped after step 29's step, without nanprobe
    opt = torch.optim.SGD(reference.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(0)
    xs, ys = torch.randn(60 * 32, 8, generator=g), torch.randn(60 * 32, 1, generator=g)
    for step in range(30):
        opt.zero_grad()
        ((reference(xs[step * 32:(step + 1) * 32]) - ys[step * 32:(step + 1) * 32]) ** 2).mean().backward()
        opt.step()
    for (name, a), b in zip(stopped.named_parameters(), reference.parameters()):
        assert torch.equal(a, b), name


def test_adams_step_does_not_follow_a_gradient_jump_so_it_is_not_warned(tmp_path: Path) -> None:
    mon, losses = _corrupt_row_run(tmp_path, 1e3, adam=True, steps=40)
    assert [w for w in mon.warnings if w.signal == "grad_spike"] == []
    assert all(math.isfinite(v) for v in losses)  # Adam's step is about lr whatever the gradient's size


def test_a_gradient_jump_is_not_warned_while_the_run_clips_its_gradients(tmp_path: Path) -> None:
    """Clipped at 0.3 (below the ordinary norms, about 0.6), every step is bounded: the same batch moves the
    weights no further than any other, and the run stays finite."""
    mon, losses = _corrupt_row_run(tmp_path, 1e3, clip=0.3, steps=40)
    assert all(math.isfinite(v) for v in losses)
    assert [w for w in mon.warnings if w.signal == "grad_spike"] == []
    assert next(r for r in mon.history.tail() if r["step"] == 30)["outlier_row"] == 5  # still found and logged
