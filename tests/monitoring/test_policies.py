"""raise / dump / warn, loss and gradient checks, and the monitor leaving no trace."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn.modules import module as module_globals

from nanprobe.errors import NonFiniteError
from nanprobe.monitoring import Monitor, NonFiniteWarning, monitor
from tests.monitoring.models import SqrtNet, bad_batch, good_batch, make_lognet


def _loop(mon: Monitor, model: torch.nn.Module, bad_steps: set[int], steps: int = 6) -> list[int]:
    seen = []
    for step in range(steps):
        model(bad_batch() if step in bad_steps else good_batch())
        seen.append(step)
    return seen


def test_raise_stops_at_the_first_bad_step_with_the_diagnosis_in_the_message(tmp_path: Path) -> None:
    model = make_lognet()
    seen: list[int] = []
    with pytest.raises(NonFiniteError) as info, monitor(model, out_dir=tmp_path, run_name="r") as mon:
        for step in range(6):
            model(bad_batch() if step >= 2 else good_batch())
            seen.append(step)
    assert seen == [0, 1]
    message = str(info.value)
    assert "\n" not in message and "step 2" in message and str(tmp_path / "r-step2") in message
    assert "nanprobe replay" in message
    assert mon.failures[0].step == 2 and mon.failures[0].bundle == tmp_path / "r-step2"
    assert info.value.diagnosis is None or info.value.diagnosis.to_dict()["status"] == "nonfinite"


def test_dump_goes_on_and_writes_one_bundle(tmp_path: Path) -> None:
    model = make_lognet()
    with monitor(model, out_dir=tmp_path, on_nonfinite="dump", run_name="d") as mon:
        seen = _loop(mon, model, bad_steps={2, 3, 5})
    assert seen == list(range(6))
    assert mon.nonfinite_steps == 3
    assert [f.step for f in mon.failures] == [2, 3, 5]
    assert mon.bundles == [tmp_path / "d-step2"]
    assert [p.name for p in tmp_path.iterdir()] == ["d-step2"]
    assert "max_bundles=1" in mon.failures[1].message


def test_warn_warns_with_the_bundle_path(tmp_path: Path) -> None:
    model = make_lognet()
    with pytest.warns(NonFiniteWarning, match="w-step1"), monitor(model, out_dir=tmp_path, on_nonfinite="warn",
                                                                  run_name="w") as mon:
        seen = _loop(mon, model, bad_steps={1}, steps=3)
    assert seen == [0, 1, 2] and mon.bundles == [tmp_path / "w-step1"]


def test_clean_loop_writes_nothing(tmp_path: Path) -> None:
    model = make_lognet()
    with monitor(model, out_dir=tmp_path) as mon:
        _loop(mon, model, bad_steps=set(), steps=5)
    assert mon.failures == [] and mon.current_step == 4 and mon.calls == 5
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


def test_loss_check_catches_a_nonfinite_loss_from_finite_outputs(tmp_path: Path) -> None:
    model = make_lognet()
    with pytest.raises(NonFiniteError, match=r"step 1 \(loss\)") as info, \
            monitor(model, out_dir=tmp_path, run_name="l") as mon:
        for step in range(3):
            out = model(good_batch())
            target = torch.zeros_like(out) if step == 1 else out.detach() + 1
            loss = torch.log((out - out.detach() + target).abs()).mean()  # log(0) = -inf at step 1
            mon.check_loss(loss).backward()
    report = mon.failures[0].report
    assert report["monitor"]["phase"] == "loss" and report["monitor"]["detected"]["kind"] == "inf"
    assert report["step"] == 1 and report["monitor"]["call"]["backward"] is True
    assert {k: v for k, v in report["history"][-1].items() if k != "output_absmax"} == {"step": 1, "loss": "-inf"}
    assert report["history"][-1]["output_absmax"] > 0  # the outputs were finite: the loss was not
    assert mon.history.tail()[0]["step"] == 0 and "l-step1" in str(info.value)


def test_gradient_check_names_the_parameters_module(tmp_path: Path) -> None:
    model = SqrtNet()
    with pytest.raises(NonFiniteError, match=r"\(backward\)"), \
            monitor(model, out_dir=tmp_path, run_name="g", diagnose=False) as mon:
        out = model(torch.rand(2, 3))
        mon.check_loss(out.sum()).backward()
        mon.after_backward()
    report = mon.failures[0].report
    assert report["monitor"]["phase"] == "backward"
    assert report["monitor"]["detected"]["paths"] == ["lin.weight", "lin.bias"]
    assert report["first_nonfinite"]["module"] == "lin" and report["first_nonfinite"]["phase"] == "backward"


def test_grad_norm_and_lr_are_logged(tmp_path: Path) -> None:
    model = make_lognet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with monitor(model, out_dir=tmp_path, optimizer=opt) as mon:
        for _ in range(3):
            opt.zero_grad()
            loss = mon.check_loss(model(good_batch()).pow(2).mean())
            loss.backward()
            norm = mon.after_backward()
            opt.step()
            mon.step()
    expected = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item()
    assert norm == pytest.approx(expected)
    rows = mon.history.tail()
    assert [r["step"] for r in rows] == [0, 1, 2] and all(r["lr"] == 0.05 for r in rows)
    assert all({"loss", "grad_norm"} <= set(r) for r in rows)


def test_monitor_leaves_no_hooks_and_adds_none_per_module(tmp_path: Path) -> None:
    model = make_lognet()
    before = (len(module_globals._global_forward_hooks), len(module_globals._global_forward_pre_hooks))
    with pytest.raises(NonFiniteError), monitor(model, out_dir=tmp_path):
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
        model(bad_batch())
    assert (len(module_globals._global_forward_hooks), len(module_globals._global_forward_pre_hooks)) == before
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_the_monitor_does_not_change_the_random_stream(tmp_path: Path) -> None:
    def run(monitored: bool) -> list[torch.Tensor]:
        torch.manual_seed(3)
        model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5))
        outs = []
        if monitored:
            with monitor(model, out_dir=tmp_path, mode="full", every=2) as mon:
                outs = [model(torch.ones(2, 4)) for _ in range(5)]
            assert [s["step"] for s in mon.layer_history] == [0, 2, 4]
            assert {r["module"] for r in mon.layer_history[0]["layers"]} >= {"0", "1"}
        else:
            outs = [model(torch.ones(2, 4)) for _ in range(5)]
        return outs

    for a, b in zip(run(False), run(True)):
        assert torch.equal(a, b)


def test_bad_arguments_are_refused() -> None:
    model = make_lognet()
    with pytest.raises(ValueError, match="on_nonfinite"):
        monitor(model, on_nonfinite="explode")
    with pytest.raises(ValueError, match="checkpoint="):
        monitor(model, save_model="reference")
    with pytest.raises(ValueError, match="mode"):
        monitor(model, mode="paranoid")
