"""An optimizer step that turns finite gradients into NaN: Adam with float16 parameters (its eps 1e-8 is 0 in
float16). The monitor warns when the optimizer is attached, before any NaN; the bundle's nonfinite_parameter
verdict names the optimizer step with what its state shows; the fix it gives works."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import nanprobe
from nanprobe.errors import GrowthError
from nanprobe.monitoring import monitor
from nanprobe.postmortem.bundle import load_bundle
from tests.monitoring.loops import train_under_monitor


def _net(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 1)).to(dtype)


def _run(tmp_path: Path, dtype: torch.dtype = torch.float16, optimizer: str = "Adam", steps: int = 30,
         **kwargs: Any) -> tuple[Any, list[float]]:
    model = _net(dtype)
    opt = getattr(torch.optim, optimizer)(model.parameters(), lr=1e-3, **kwargs)
    return _train(tmp_path, model, opt, torch.randn(32, 16).to(dtype), torch.randn(32, 1).to(dtype), steps)


def _train(tmp_path: Path, model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
           steps: int) -> tuple[Any, list[float]]:
    return train_under_monitor(tmp_path, model, opt, x, y, steps, quiet=True, time_budget=None)


class _BreaksAtStep3(torch.optim.SGD):
    """A user's optimizer with a bug: after its 3rd step, ``breaks`` writes into the parameters (no_grad)."""

    def __init__(self, params: Any, breaks: Callable[[list[torch.Tensor]], None]) -> None:
        super().__init__(params, lr=1e-3)
        self.__dict__["_breaks"], self.__dict__["_n"] = breaks, 0

    def step(self, closure: Any = None) -> Any:
        out = super().step(closure)
        self.__dict__["_n"] += 1
        if self.__dict__["_n"] == 3:
            with torch.no_grad():
                self.__dict__["_breaks"](self.param_groups[0]["params"])
        return out


def test_float16_adam_is_warned_before_the_nan_and_its_step_is_the_verdict(tmp_path: Path) -> None:
    mon, losses = _run(tmp_path)
    assert not math.isfinite(losses[-1]) and len(losses) == 2  # the first step already breaks the weights
    (warning,) = [w for w in mon.warnings if w.signal == "optimizer"]
    assert warning.step == 0 < mon.failures[0].step
    assert "Adam's step can turn finite gradients into NaN/Inf parameters" in warning.message
    assert "eps 1e-08 is 0 in float16" in warning.message and "eps to 1e-4" in warning.message
    report = load_bundle(mon.bundles[0]).report
    verdict = report.verdict
    assert verdict.cause == "nonfinite_parameter"
    assert verdict.root.parameter in ("0.weight", "0.bias") and verdict.root.evidence.startswith("Adam.step(): ")
    assert verdict.root.step == 0 and "the update ratio of step 0 was nan" in verdict.root.evidence
    assert "Adam's step (step 0) made them so: eps 1e-08" in verdict.summary  # one sentence, not two
    assert "They were written by" not in verdict.summary
    line = next(e for e in verdict.evidence if "Adam.step() made" in e)
    bad = int(line.split(" of the ")[1].split()[0])
    assert f"{bad} of the {bad} non-finite values sit where exp_avg_sq is 0" in line  # every one of them
    assert "torch.autocast with a GradScaler" in verdict.fix and "raise eps to 1e-4" in verdict.fix
    assert "lower the learning rate" not in verdict.fix


def test_attaching_the_same_optimizer_again_warns_once(tmp_path: Path) -> None:
    model = _net(torch.float16)
    opt = torch.optim.Adam(model.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with monitor(model, out_dir=tmp_path, optimizer=opt) as mon:
            for _ in range(3):
                mon.attach(opt)  # as a framework's callback does at each stage
                mon.check_loss(model(torch.randn(4, 16).half()).float().pow(2).mean())
                mon.step()
    assert [w.signal for w in mon.warnings] == ["optimizer"]


def test_on_warning_raise_stops_the_run_while_the_weights_are_finite(tmp_path: Path) -> None:
    model = _net(torch.float16)
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(GrowthError, match="AdamW's step"), \
            monitor(model, out_dir=tmp_path, optimizer=opt, on_warning="raise") as mon:
        mon.check_loss(model(torch.randn(4, 16).half()).float().pow(2).mean())
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize(("dtype", "optimizer", "kwargs"), [
    (torch.float16, "Adam", {"eps": 1e-4}),  # the fix
    (torch.float32, "Adam", {}),
    (torch.float16, "SGD", {"momentum": 0.9}),
    (torch.float16, "Adadelta", {}),
])
def test_optimizers_that_work_for_their_dtype_are_not_warned(
        tmp_path: Path, dtype: torch.dtype, optimizer: str, kwargs: dict[str, float]) -> None:
    mon, losses = _run(tmp_path, dtype, optimizer, **kwargs)
    assert len(losses) == 30 and all(math.isfinite(v) for v in losses)
    assert not mon.warnings and not mon.bundles


def test_diagnose_reads_the_optimizer_it_is_given(tmp_path: Path) -> None:
    model = _net(torch.float16)
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    x = torch.randn(8, 16).half()
    model(x).float().pow(2).mean().backward()
    opt.step()
    before = {k: v.clone() for k, v in opt.state_dict()["state"][0].items()}
    report = nanprobe.diagnose(model, [x], optimizer=opt)
    assert report.verdict.cause == "nonfinite_parameter"
    assert "RMSprop's step made them so: eps 1e-08 is 0 in float16" in report.verdict.summary
    assert "square_avg is 0" in " ".join(report.verdict.evidence)
    after = opt.state_dict()["state"][0]
    assert all(torch.equal(before[k], after[k]) for k in before)  # read, never written
    plain = nanprobe.diagnose(model, [x])
    assert "RMSprop" not in plain.verdict.summary and "lower the learning rate" in plain.verdict.fix


def test_replay_keeps_the_recorded_optimizer_step_it_cannot_re_create(tmp_path: Path) -> None:
    import io
    import json

    from nanprobe.cli.main import main

    mon, _ = _run(tmp_path / "b")
    out, err, js = io.StringIO(), io.StringIO(), tmp_path / "replay.json"
    code = main(["replay", str(mon.bundles[0]), "--trust-pickle", "--json", str(js), "--no-color"],
                stdout=out, stderr=err)
    assert code == 1, err.getvalue()
    verdict = json.loads(js.read_text())["verdict"]
    assert verdict["cause"] == "nonfinite_parameter" and verdict["root"]["evidence"].startswith("Adam.step(): ")
    assert "raise eps to 1e-4" in verdict["fix"]
    assert any(line.startswith("recorded at the failing step, from state the bundle does not hold: Adam.step()")
               for line in verdict["evidence"])


def test_an_optimizer_nanprobe_cannot_read_never_breaks_the_run(tmp_path: Path) -> None:
    """A user's optimizer named like a table entry, with float16 weights and eps 1e-8, whose state cannot be
    read the way nanprobe reads it: no warning, no error, the run goes on."""

    class State(dict):
        def get(self, *args: Any) -> Any:
            raise RuntimeError("not readable")

    class Adam(torch.optim.SGD):  # the table's name, the user's class
        pass

    model = _net(torch.float16)
    opt = Adam(model.parameters(), lr=1e-3)
    opt.param_groups[0]["eps"] = 1e-8
    opt.state = State()
    mon, _ = _train(tmp_path, model, opt, torch.randn(8, 16).half(), torch.randn(8, 1).half(), 3)
    assert not mon.warnings and not mon.bundles and len(mon.history.tail()) == 3


def test_an_optimizer_step_that_writes_nan_from_finite_gradients_is_named_with_its_step(tmp_path: Path) -> None:
    """Not in the table at all: the history's update ratio (NaN at the step that broke the weights) and that
    step's finite gradient norm say it was the optimizer step, and which. The subclass's step() calls
    super().step(), so the step hooks run nested: the ratio must cover the whole user step."""
    torch.optim.SGD([torch.zeros(1, requires_grad=True)])  # torch hooks SGD.step too: the step hooks nest
    model = _net(torch.float32)

    def zero_by_zero(params: list[torch.Tensor]) -> None:
        for p in params:
            p.div_(p - p)  # 0/0

    opt = _BreaksAtStep3(model.parameters(), zero_by_zero)
    mon, _ = _train(tmp_path, model, opt, torch.randn(32, 16), torch.randn(32, 1), 5)
    report = load_bundle(mon.bundles[0]).report
    assert report.step == 3 and report.verdict.cause == "nonfinite_parameter"
    root = report.verdict.root
    assert root.step == 2 and root.parameter is None
    norm = next(row["grad_norm"] for row in report.history if row["step"] == 2)
    assert root.evidence == (f"the update ratio of step 2 was nan: that step's optimizer.step() wrote non-finite "
                             f"values into the parameters; from finite gradients (norm {norm:.3g})")
    assert "written by the optimizer step of step 2" in report.verdict.summary


def test_broken_by_step_reads_the_first_nonfinite_update_ratio() -> None:
    from nanprobe.diagnosis.dynamics import broken_by_step

    rows = [{"step": 0, "update_ratio": 0.01, "grad_norm": 1.0}, {"step": 1, "update_ratio": "nan"},
            {"step": 2, "update_ratio": float("inf"), "grad_norm": 2.0}]
    found = broken_by_step(rows)
    assert (found.step, found.ratio, found.grad_norm) == (1, "nan", None)
    assert "its gradients were not finite (or not recorded)" in found.describe()
    assert broken_by_step(rows[2:]).ratio == "inf" and broken_by_step(rows[2:]).grad_norm == 2.0
    assert broken_by_step(rows[:1]) is None and broken_by_step([]) is None


def test_a_nonfinite_optimizer_state_is_named_and_the_fix_says_to_reload_it_too() -> None:
    """A NaN gradient stepped through Adam (float32: nothing in the table) leaves NaN in the weights and in
    exp_avg/exp_avg_sq: reloading the weights alone would break them again at the next step."""
    model = _net(torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(8, 16)
    model(x).pow(2).mean().backward()
    model[0].weight.grad[0, 0] = float("nan")
    opt.step()
    report = nanprobe.diagnose(model, [x], optimizer=opt)
    verdict = report.verdict
    assert verdict.cause == "nonfinite_parameter"
    line = next(e for e in verdict.evidence if "the optimizer's state is non-finite too" in e)
    assert "Adam's exp_avg of 0.weight holds 1 non-finite value" in line
    assert "Adam's exp_avg_sq of 0.weight holds 1 non-finite value" in line
    assert "reload it together with the weights" in verdict.fix
    assert "Adam.step()" not in verdict.summary  # float32: eps is not the story
    fine = nanprobe.diagnose(model, [x])
    assert "optimizer's state" not in fine.verdict.fix


def test_weights_an_optimizer_step_broke_are_reported_though_the_outputs_stay_finite(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 1))

    def one_inf(params: list[torch.Tensor]) -> None:
        params[0][0, 0] = float("inf")  # tanh saturates it: the outputs stay finite

    opt = _BreaksAtStep3(model.parameters(), one_inf)
    mon, losses = _train(tmp_path, model, opt, torch.randn(32, 16), torch.randn(32, 1), 8)
    assert len(losses) == 8 and all(math.isfinite(v) for v in losses)  # nothing else would have noticed
    (failure,) = mon.failures
    assert (failure.phase, failure.step) == ("parameters", 3)
    report = load_bundle(mon.bundles[0]).report
    assert report.monitor.phase == "parameters" and report.monitor.detected.paths == ["0.weight"]
    assert report.first_nonfinite.module == "0" and report.first_nonfinite.kind == "inf"
    verdict = report.verdict
    assert verdict.cause == "nonfinite_parameter" and verdict.root.step == 2
    assert "the update ratio of step 2 was nan" in verdict.root.evidence
    assert "from finite gradients" in verdict.root.evidence
