"""The Hugging Face Trainer callback against the real package: a NaN at a known step gives one bundle for that
step with the right origin, and the loss, gradient norm and learning rate of each step at the step the Trainer
logged them for; a clean run gives nothing."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from nanprobe import NonFiniteError
from nanprobe.integrations.transformers import NanprobeCallback
from nanprobe.monitoring.monitor import GrowthWarning, MonitorWarning, NonFiniteWarning
from nanprobe.postmortem.bundle import load_bundle
from tests.integrations.hf_models import BAD_ROW, BATCH, Tokens, tiny_bert, tiny_gpt2, trainer

STEPS = 6
BAD = 3
OURS = (MonitorWarning, NonFiniteWarning, GrowthWarning)


def _logged(run: object) -> dict[int, dict]:
    """The Trainer's own per-step logs, by the step they were computed in (it logs after its step end)."""
    return {row["step"] - 1: row for row in run.state.log_history if "loss" in row}  # type: ignore[attr-defined]


def _no_global_hooks() -> bool:
    from torch.nn.modules import module
    return not (module._global_forward_pre_hooks or module._global_forward_hooks)


def test_a_nan_at_a_known_step_stops_training_with_a_bundle_for_that_step(tmp_path: Path) -> None:
    model = tiny_bert()
    callback = NanprobeCallback(tmp_path / "bundles")
    run = trainer(model, [callback], STEPS, str(tmp_path / "out"), bad_step=BAD)
    with pytest.raises(NonFiniteError) as info:
        run.train()
    assert run.state.global_step == BAD
    (bundle,) = callback.monitor.bundles
    assert bundle.name == f"bertformaskedlm-step{BAD}" and f"step {BAD}" in str(info.value)
    report = load_bundle(bundle).report
    assert report.step == BAD
    first = report.first_nonfinite
    assert (first.module, first.module_type, first.samples) == ("bert.embeddings.LayerNorm", "LayerNorm", [BAD_ROW])
    assert report.verdict.cause == "dtype_overflow"
    # the history the bundle holds is the Trainer's own, step for step: no loss one step late
    logged = _logged(run)
    history = {row["step"]: row for row in report.history}
    assert sorted(logged) == list(range(BAD)) and set(logged) <= set(history)
    for step, row in logged.items():
        assert history[step]["loss"] == pytest.approx(row["loss"], rel=1e-5)
        assert history[step]["grad_norm"] == pytest.approx(row["grad_norm"], rel=1e-4)  # before clipping
        assert history[step]["lr"] == pytest.approx(row["learning_rate"], rel=1e-6)
    # nothing stays behind: no global hook, no gradient hook on the parameters
    assert _no_global_hooks()
    assert all(not p._post_accumulate_grad_hooks for p in model.parameters())


def test_a_clean_run_gives_no_bundle_no_warning_and_the_trainers_steps(tmp_path: Path) -> None:
    callback = NanprobeCallback(tmp_path / "bundles")
    run = trainer(tiny_bert(), [callback], STEPS, str(tmp_path / "out"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.train()
    mon = callback.monitor
    assert [w for w in caught if issubclass(w.category, OURS)] == []
    assert mon.bundles == [] and mon.failures == [] and not (tmp_path / "bundles").exists()
    assert mon.current_step == run.state.global_step == STEPS and mon.calls == STEPS
    history = {row["step"]: row for row in mon.history.tail()}
    for step, row in _logged(run).items():
        assert history[step]["loss"] == pytest.approx(row["loss"], rel=1e-5)
        assert history[step]["lr"] == pytest.approx(row["learning_rate"], rel=1e-6)
    assert all(not p._post_accumulate_grad_hooks for p in run.model.parameters()) and _no_global_hooks()


def test_gradient_accumulation_counts_optimizer_steps_and_averages_the_loss(tmp_path: Path) -> None:
    callback = NanprobeCallback(tmp_path / "bundles", on_nonfinite="dump")
    run = trainer(tiny_bert(), [callback], 4, str(tmp_path / "out"), bad_step=2, accumulation=2)
    run.train()
    mon = callback.monitor
    assert mon.calls == 8 and run.state.global_step == 4 and mon.current_step == 4
    assert mon.failures[0].step == 2 and mon.bundles[0].name == "bertformaskedlm-step2"
    history = {row["step"]: row for row in mon.history.tail()}
    # the mean of the two micro-batches' outputs.loss: an untrained 32-word MLM head gives about log(32) (this
    # transformers logs the micro-batches' sum under accumulation, twice that)
    assert [history[step]["loss"] for step in (0, 1)] == [pytest.approx(math.log(32), abs=0.1)] * 2
    assert history[2]["loss"] == "nan"  # JSON-ready history


@pytest.mark.parametrize("policy", ["dump", "warn"])
def test_dump_and_warn_keep_training(tmp_path: Path, policy: str) -> None:
    callback = NanprobeCallback(tmp_path / "bundles", on_nonfinite=policy)
    run = trainer(tiny_bert(), [callback], STEPS, str(tmp_path / "out"), bad_step=BAD)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.train()
    mon = callback.monitor
    assert run.state.global_step == STEPS and mon.current_step == STEPS
    assert [b.name for b in mon.bundles] == [f"bertformaskedlm-step{BAD}"]
    assert mon.failures[0].step == BAD and all(f.step >= BAD for f in mon.failures)
    nonfinite = [w for w in caught if issubclass(w.category, NonFiniteWarning)]
    assert len(nonfinite) == (len(mon.failures) if policy == "warn" else 0)


def test_bf16_autocast_on_cpu_gives_no_false_alarm(tmp_path: Path) -> None:
    callback = NanprobeCallback(tmp_path / "bundles")
    run = trainer(tiny_bert(), [callback], 4, str(tmp_path / "out"), bf16=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.train()
    assert callback.monitor.failures == [] and [w for w in caught if issubclass(w.category, OURS)] == []
    assert all(math.isfinite(row["loss"]) for row in callback.monitor.history.tail())


def test_the_real_optimizer_and_the_scaler_are_found_inside_accelerates_wrapper(tmp_path: Path) -> None:
    """accelerate wraps the optimizer (its step hooks would never fire) and holds the fp16 GradScaler, which it
    only creates on an accelerator device: build the wrapper directly, with a real CPU scaler."""
    from accelerate import Accelerator
    from accelerate.optimizer import AcceleratedOptimizer

    from nanprobe.integrations._glue import CallbackMonitor

    Accelerator(cpu=True)  # the state an AcceleratedOptimizer reads
    model = torch.nn.Linear(4, 1)
    inner = torch.optim.SGD(model.parameters(), lr=0.125)
    scaler = torch.amp.GradScaler("cpu")
    wrapped = AcceleratedOptimizer(inner, device_placement=False, scaler=scaler)
    glue = CallbackMonitor(tmp_path, {})
    mon = glue.start(model, step=7, optimizer=wrapped)
    try:
        assert mon.optimizer is inner and mon.signals.scaler is scaler and mon.current_step == 7
        scaler.scale(model(torch.ones(2, 4)).sum()).backward()
        mon.after_backward()
        wrapped.step()
        last = mon.history.tail()[-1]
        assert last["step"] == 7 and last["lr"] == 0.125  # the inner optimizer's pre-step hook fired
        assert last["loss_scale"] == 2.0 ** 16 and last["grad_norm"] == pytest.approx(math.sqrt(4 * 4 + 4))
    finally:
        glue.stop()


def test_a_monitored_run_with_a_nan_step_ends_bitwise_as_the_bare_run(tmp_path: Path) -> None:
    """Never harm: weights, optimizer state, the Trainer's logs and the RNG are those of the bare run, although
    the diagnosis re-ran the failing batch several times inside the step (dropout on)."""

    def run(callbacks: list, out: str) -> dict:
        model = tiny_bert()
        run = trainer(model, callbacks, STEPS, out, bad_step=BAD)
        run.train()
        return {"state": {k: v.clone() for k, v in model.state_dict().items()}, "opt": run.optimizer.state_dict(),
                "logs": [{k: v for k, v in row.items() if "runtime" not in k and "per_second" not in k}
                         for row in run.state.log_history], "rng": torch.get_rng_state()}

    bare = run([], str(tmp_path / "bare"))
    watched = run([NanprobeCallback(tmp_path / "bundles", on_nonfinite="dump")], str(tmp_path / "watched"))
    assert (tmp_path / "bundles" / f"bertformaskedlm-step{BAD}").is_dir()
    assert bare["state"].keys() == watched["state"].keys()
    for name, value in bare["state"].items():
        assert torch.equal(value.nan_to_num(), watched["state"][name].nan_to_num()), name
        assert torch.equal(value.isnan(), watched["state"][name].isnan()), name
    assert str(bare["opt"]) == str(watched["opt"]) and str(bare["logs"]) == str(watched["logs"])
    assert torch.equal(bare["rng"], watched["rng"])


def test_without_a_loss_in_the_outputs_the_logged_loss_lands_at_its_own_step(tmp_path: Path) -> None:
    """A ``compute_loss_func`` computes the loss outside the model (which then returns none): the loss the
    Trainer logs after each step is recorded at the step it was computed in, not one step late."""

    def loss_func(outputs: object, labels: torch.Tensor, num_items_in_batch: object = None) -> torch.Tensor:
        logits = outputs.logits  # type: ignore[attr-defined]
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))

    callback = NanprobeCallback(tmp_path / "bundles")
    run = trainer(tiny_bert(), [callback], 4, str(tmp_path / "out"))
    run.compute_loss_func = loss_func
    run.train()
    assert callback._glue._losses[0] == -1  # no call returned a loss: every value below came from on_log
    history = {row["step"]: row for row in callback.monitor.history.tail()}
    logged = _logged(run)
    assert sorted(logged) == [0, 1, 2, 3]
    for step, row in logged.items():
        assert history[step]["loss"] == pytest.approx(row["loss"], rel=1e-5)
        assert "output_absmax" in history[step]  # the same step's record, not a new one


@pytest.mark.parametrize("max_grad_norm", [0.01, 0.0])
def test_the_trainers_clipping_is_measured_as_the_clip_ratio(tmp_path: Path, max_grad_norm: float) -> None:
    """The Trainer clips after the backward the monitor reads and before the optimizer's step: each step's
    clip ratio is max_grad_norm / its gradient norm (clipping at 0 is off: 1)."""
    callback = NanprobeCallback(tmp_path / "bundles")
    run = trainer(tiny_bert(), [callback], 4, str(tmp_path / "out"), max_grad_norm=max_grad_norm)
    run.train()
    rows = {row["step"]: row for row in callback.monitor.history.tail()}
    ratios = {step: row["clip_ratio"] for step, row in rows.items() if "clip_ratio" in row}
    assert sorted(ratios) == [0, 1, 2]  # the last step's is read back with a next step that never comes
    for step, ratio in ratios.items():
        expected = max_grad_norm / rows[step]["grad_norm"] if max_grad_norm else 1.0
        assert ratio == pytest.approx(expected, rel=5e-3), (step, ratio, rows[step]["grad_norm"])


def test_gpt2_trained_with_sgd_at_lr_3e3_is_a_divergence_not_an_overflow_in_layernorm(tmp_path: Path) -> None:
    """The issue's case: a learning rate of 3e3 (for 3e-3) without clipping blows GPT-2 up within 3 steps and the
    first Inf is in a LayerNorm; the verdict is the run's divergence from step 0, and its fix the learning rate."""
    callback = NanprobeCallback(tmp_path / "bundles", on_nonfinite="dump")
    run = trainer(tiny_gpt2(), [callback], 20, str(tmp_path / "out"), learning_rate=3e3, optim="sgd",
                  lr_scheduler_type="constant", max_grad_norm=0.0, data=Tokens(20 * BATCH))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run.train()
    bundle = callback.monitor.bundles[0]
    report = load_bundle(bundle).report
    assert report.step <= 4, report.step
    verdict = report.verdict
    assert verdict is not None and verdict.cause == "training_divergence", verdict
    assert verdict.root is not None and verdict.root.step == 0
    assert "the learning rate in effect was 3e+03" in verdict.fix and "meant as 0.003" in verdict.fix, verdict.fix
    assert any("changed the weights by" in e for e in verdict.evidence), verdict.evidence
