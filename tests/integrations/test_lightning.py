"""The Lightning callback against the real package: a NaN at a known step gives one bundle for that step with
the right origin and history; a clean fit gives nothing; the bare-monitor mistake is warned about."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

pytest.importorskip("lightning")

from nanprobe import NonFiniteError, monitor
from nanprobe.integrations.lightning import NanprobeCallback
from nanprobe.monitoring.monitor import GrowthWarning, MonitorWarning, NonFiniteWarning
from nanprobe.postmortem.bundle import load_bundle
from nanprobe.testing import iter_hook_dicts
from tests.integrations.lit_models import BAD_ROW, LR, LitLogNet, LitRegression, loader, regression_loader, trainer

STEPS = 6
BAD = 3
OURS = (MonitorWarning, NonFiniteWarning, GrowthWarning)


def _ours(caught: list[warnings.WarningMessage]) -> list[str]:
    return [f"{w.category.__name__}: {w.message}" for w in caught if issubclass(w.category, OURS)]


def _no_global_hooks() -> bool:
    from torch.nn.modules import module
    return not (module._global_forward_pre_hooks or module._global_forward_hooks)


def test_a_nan_at_a_known_step_stops_the_fit_with_a_bundle_for_that_step(tmp_path: Path) -> None:
    lit = LitLogNet()
    callback = NanprobeCallback(tmp_path)
    fit = trainer([callback], STEPS)
    with pytest.raises(NonFiniteError) as info:
        fit.fit(lit, loader(STEPS, bad_step=BAD))
    assert fit.global_step == BAD  # stopped in the bad step, before its optimizer step
    mon = callback.monitor
    (bundle,) = mon.bundles
    assert bundle.name == f"litlognet-step{BAD}" and f"step {BAD}" in str(info.value)
    report = load_bundle(bundle).report
    assert report.step == BAD and report.epoch == 0
    first = report.first_nonfinite
    assert (first.module, first.module_type, first.samples) == ("net.0", "Log", [BAD_ROW])
    assert report.verdict.cause == "numerical_domain"
    assert report.monitor.call.method == "training_step" and report.monitor.call.mode == "train"
    steps = [row["step"] for row in report.history]
    assert steps[:BAD] == list(range(BAD))
    for row in report.history[:BAD]:
        assert row["lr"] == LR and math.isfinite(row["loss"]) and row["grad_norm"] > 0
        assert row["loss"] == row["output_absmax"]  # the loss training_step returned, at its own step
    assert _no_global_hooks() and "training_step" not in lit.__dict__  # nothing left behind


@pytest.mark.parametrize("policy", ["dump", "warn"])
def test_dump_and_warn_keep_training_and_write_one_bundle(tmp_path: Path, policy: str) -> None:
    callback = NanprobeCallback(tmp_path, on_nonfinite=policy)
    fit = trainer([callback], STEPS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit.fit(LitLogNet(), loader(STEPS, bad_step=BAD))
    assert fit.global_step == STEPS and callback.monitor.current_step == STEPS
    assert [b.name for b in callback.monitor.bundles] == [f"litlognet-step{BAD}"]
    # SGD applied the NaN gradients, so every later step is non-finite too: one failure (and, with "warn",
    # one warning) per step, each step once (outputs and then gradients are one failure)
    failures = callback.monitor.failures
    assert [(f.step, f.phase) for f in failures] == [(step, "forward") for step in range(BAD, STEPS)]
    nonfinite = [str(w.message) for w in caught if issubclass(w.category, NonFiniteWarning)]
    assert len(nonfinite) == (len(failures) if policy == "warn" else 0)
    assert policy == "dump" or nonfinite[0].startswith(f"non-finite nan at step {BAD} (forward)")
    assert _no_global_hooks()


def test_a_clean_fit_gives_no_bundle_no_warning_and_the_frameworks_steps(tmp_path: Path) -> None:
    callback = NanprobeCallback(tmp_path)
    fit = trainer([callback], STEPS, val_check_interval=3, limit_val_batches=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit.fit(LitLogNet(), loader(STEPS), loader(2))
    mon = callback.monitor
    assert _ours(caught) == [] and mon.bundles == [] and mon.failures == [] and not any(tmp_path.iterdir())
    assert mon.current_step == fit.global_step == STEPS
    history = mon.history.tail()
    # the last validation run (after step 5's optimizer step, at global step 6) records its outputs at step 6
    assert [row["step"] for row in history] == [*range(STEPS), STEPS]
    history = history[:STEPS]
    assert all({"loss", "grad_norm", "lr"} <= row.keys() for row in history)
    # every step's update ratio, though Lightning's closure computes the gradients inside step(); the last one is
    # read back by the final validation's call
    assert [row["step"] for row in history if "update_ratio" in row] == list(range(STEPS))
    assert mon.calls == STEPS + 2 * 2  # training steps + two validation runs of two batches (no step of their own)
    assert _no_global_hooks()


def test_a_bare_monitor_around_the_lightningmodule_says_what_to_pass_instead(tmp_path: Path) -> None:
    """The issue's mistake: training_step calls self.net(x), so the LightningModule itself is never called."""
    lit = LitLogNet()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with monitor(lit, tmp_path):
            trainer([], 2).fit(lit, loader(2))
    (message,) = [str(w.message) for w in caught if issubclass(w.category, MonitorWarning)]
    assert "saw no call of LitLogNet" in message and "methods=" in message and "NanprobeCallback" in message


def test_validation_nan_is_reported_at_the_step_it_ran_in(tmp_path: Path) -> None:
    callback = NanprobeCallback(tmp_path, on_nonfinite="dump")
    fit = trainer([callback], 4, val_check_interval=2, limit_val_batches=1)
    fit.fit(LitLogNet(), loader(4), loader(1, bad_step=0))
    failures = callback.monitor.failures
    assert [(f.step, f.phase) for f in failures] == [(2, "forward"), (4, "forward")]
    report = load_bundle(callback.monitor.bundles[0]).report
    assert report.monitor.call.method == "validation_step" and report.monitor.call.mode == "eval"
    assert report.first_nonfinite.module == "net.0"


def test_the_diagnosis_leaves_lightnings_logged_metrics_and_the_run_as_they_were(tmp_path: Path) -> None:
    """Never harm: a dump-mode fit with a NaN step ends bitwise as the bare fit (weights, optimizer state,
    RNG, logged metrics), although the diagnosis re-ran training_step several times."""

    def run(callbacks: list) -> dict:
        torch.manual_seed(0)
        lit = LitLogNet()
        fit = trainer(callbacks, STEPS)
        fit.fit(lit, loader(STEPS, bad_step=BAD))
        return {"state": {k: v.clone() for k, v in lit.state_dict().items()},
                "opt": fit.optimizers[0].state_dict(), "rng": torch.get_rng_state(),
                "metrics": {k: v.clone() for k, v in fit.callback_metrics.items()}}

    bare = run([])
    watched = run([NanprobeCallback(tmp_path, on_nonfinite="dump")])
    assert any(tmp_path.iterdir())
    assert float(bare["metrics"]["calls"]) == STEPS and float(bare["metrics"]["rows"]) == STEPS * 8
    for key in ("state", "metrics"):
        assert bare[key].keys() == watched[key].keys()
        for name, value in bare[key].items():
            assert torch.equal(value.nan_to_num(), watched[key][name].nan_to_num()), (key, name)
            assert torch.equal(value.isnan(), watched[key][name].isnan()), (key, name)
    assert torch.equal(bare["rng"], watched["rng"])
    assert str(bare["opt"]) == str(watched["opt"])


def test_manual_optimization_watches_forward_and_never_reruns_the_step(tmp_path: Path) -> None:
    class Manual(LitLogNet):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x).squeeze(-1)

        def training_step(self, batch: tuple, batch_idx: int) -> None:
            opt = self.optimizers()
            x, y = batch
            loss = torch.nn.functional.mse_loss(self(x), y)
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step()

    callback = NanprobeCallback(tmp_path, on_nonfinite="dump")
    fit = trainer([callback], STEPS)
    fit.fit(Manual(), loader(STEPS, bad_step=BAD))
    mon = callback.monitor
    assert "training_step" not in mon.settings.methods and mon.calls == STEPS
    (failure, *_) = mon.failures
    assert failure.step == BAD and load_bundle(failure.bundle).report.first_nonfinite.module == "net.0"
    assert all(not hooks for _, hooks in iter_hook_dicts([fit.lightning_module]))


def test_float16_true_precision_with_adam_is_warned_at_step_0_and_explained(tmp_path: Path) -> None:
    """precision="16-true" keeps float16 weights; Adam's eps 1e-8 is 0 there: warned before the first step,
    and the bundle of the NaN that follows names the optimizer step."""
    callback = NanprobeCallback(tmp_path, on_nonfinite="dump")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer([callback], 3, precision="16-true").fit(
            LitRegression(lambda params: torch.optim.Adam(params, lr=1e-3)), regression_loader(32))
    early = [w for w in _ours(caught) if "early warning at step 0: Adam's step" in w]
    assert len(early) == 1 and "eps 1e-08 is 0 in float16" in early[0]
    report = load_bundle(callback.monitor.bundles[0]).report
    assert report.step == 1 and report.verdict.cause == "nonfinite_parameter"
    assert report.verdict.root.evidence.startswith("Adam.step(): eps 1e-08 is 0 in float16")


def test_every_training_step_has_its_update_ratio_also_across_validation(tmp_path: Path) -> None:
    """Lightning steps the optimizer with a closure (the gradients appear inside step()): the update ratio
    is still measured at step 0, at each epoch's first step after validation, and everywhere between."""
    callback = NanprobeCallback(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = regression_loader(40)
        trainer([callback], 15, max_epochs=3).fit(LitRegression(lambda params: torch.optim.SGD(params, lr=1e-2)),
                                                  data, data)
    rows = {row["step"]: row for row in callback.monitor.history.tail() if "loss" in row}
    assert sorted(rows) == list(range(15))
    missing = [step for step, row in rows.items() if not 0 < row.get("update_ratio", 0) < 0.1]
    assert missing == []


def test_the_trainers_gradient_clipping_is_measured_as_the_clip_ratio(tmp_path: Path) -> None:
    """Lightning clips inside the optimizer's closure, after the backward the monitor reads: each step's clip
    ratio is gradient_clip_val / its gradient norm, measured after the step (the closure ran inside it)."""
    callback = NanprobeCallback(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer([callback], 5, gradient_clip_val=0.01).fit(
            LitRegression(lambda params: torch.optim.SGD(params, lr=1e-2)), regression_loader(40))
    rows = {row["step"]: row for row in callback.monitor.history.tail()}
    ratios = {step: row["clip_ratio"] for step, row in rows.items() if "clip_ratio" in row}
    assert sorted(ratios) == [0, 1, 2, 3]  # the last step's is read back with a next step that never comes
    for step, ratio in ratios.items():
        assert ratio == pytest.approx(0.01 / rows[step]["grad_norm"], rel=5e-3), (step, ratio)


def test_a_learning_rate_of_1e6_is_a_divergence_from_step_0_not_an_overflow_in_layernorm(tmp_path: Path) -> None:
    """The issue's case: at lr 1e6 the first step blows the weights up and the next forward overflows in the
    LayerNorm; the verdict is the run's divergence from step 0, and its fix the learning rate."""
    callback = NanprobeCallback(tmp_path, on_nonfinite="dump")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer([callback], 6).fit(LitRegression(lambda params: torch.optim.SGD(params, lr=1e6), layer_norm=True),
                                   regression_loader(64))
    report = load_bundle(callback.monitor.bundles[0]).report
    assert report.step <= 3, report.step
    verdict = report.verdict
    assert verdict is not None and verdict.cause == "training_divergence", verdict
    assert verdict.root is not None and verdict.root.step == 0
    assert "the learning rate in effect was 1e+06" in verdict.fix and "meant as 1e-06" in verdict.fix, verdict.fix


def test_one_corrupt_row_is_named_in_the_verdict_through_training_step(tmp_path: Path) -> None:
    """Row 5 of step 30's batch x 1e4: its gradient step blows the weights up and the fit fails two steps later.
    The callback saw the batch through training_step((x, y), batch_idx): the verdict is dated at step 30 and
    names the row of x, and the targets (also in the call) are not blamed."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(60 * 8, 8, generator=g), torch.randn(60 * 8, generator=g)
    x[30 * 8 + 5] *= 1e4
    callback = NanprobeCallback(tmp_path, on_nonfinite="dump")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer([callback], 60).fit(LitRegression(lambda params: torch.optim.SGD(params, lr=0.05)),
                                    DataLoader(TensorDataset(x, y), batch_size=8))
    report = load_bundle(callback.monitor.bundles[0]).report
    verdict = report.verdict
    assert report.step > 30 and verdict is not None and verdict.cause == "training_divergence", verdict
    assert verdict.root is not None and verdict.root.step == 30
    assert "row 5 of its input batch.args[0][0] has |max|" in verdict.root.evidence, verdict.root.evidence
    assert "drop or fix row 5 of that step's batch" in verdict.fix and "clip gradients" in verdict.fix
