"""``nanprobe trace`` of a training checkpoint reads what the run left beside the weights: the optimizer state
(the common ``{"model_state_dict", "optimizer_state_dict"}`` layout, Lightning's ``optimizer_states``, or
``optimizer.pt`` in a checkpoint folder) lets the verdict say what the optimizer's step did, and a Trainer
folder's ``trainer_state.json`` log is the run's history."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from nanprobe.cli.main import main
from nanprobe.diagnosis.optimizer import saved_optimizer

FACTORY = "tests.cli.test_trace_training_state:make_net"
HALF_FACTORY = "tests.cli.test_trace_training_state:make_half_net"


def make_net() -> nn.Module:
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 1))


def make_half_net() -> nn.Module:
    return make_net().half()


def _broken(dtype: torch.dtype, nan_grad: bool = False) -> tuple[nn.Module, torch.optim.Optimizer, torch.Tensor]:
    """One Adam step that breaks the weights: float16 (eps is 0 there), or a NaN gradient in float32."""
    torch.manual_seed(0)
    model = make_net().to(dtype)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(32, 16).to(dtype)
    model(x).float().pow(2).mean().backward()
    if nan_grad:
        model[0].weight.grad[0, 0] = float("nan")
    opt.step()
    return model, opt, x


def _trace(tmp_path: Path, ckpt: Path, x: torch.Tensor, factory: str = FACTORY) -> dict[str, Any]:
    torch.save([x], tmp_path / "batches.pt")
    out, err, js = io.StringIO(), io.StringIO(), tmp_path / "r.json"
    code = main(["trace", str(ckpt), "--model", factory, "--batches", str(tmp_path / "batches.pt"), "--json",
                 str(js), "--no-color"], stdout=out, stderr=err)
    assert code == 1, err.getvalue()
    return json.loads(js.read_text())["verdict"]


@pytest.mark.parametrize(("layout", "built"), [("optimizer_state_dict", "half"), ("optimizer_states", "half"),
                                               ("optimizer_state_dict", "float32")])
def test_float16_adam_state_saved_with_the_weights_explains_them(tmp_path: Path, layout: str, built: str) -> None:
    """Also when the factory builds the model in float32 (the weights are cast on loading): the saved state
    says the step ran in float16."""
    model, opt, x = _broken(torch.float16)
    state = opt.state_dict() if layout == "optimizer_state_dict" else [opt.state_dict()]
    torch.save({"model_state_dict": model.state_dict(), layout: state}, tmp_path / "ckpt.pt")
    if built == "float32":
        verdict = _trace(tmp_path, tmp_path / "ckpt.pt", x.float())
    else:
        verdict = _trace(tmp_path, tmp_path / "ckpt.pt", x, HALF_FACTORY)
    assert verdict["cause"] == "nonfinite_parameter"
    assert "Adam's step made them so: eps 1e-08 is 0 in float16" in verdict["summary"]
    assert verdict["root"]["evidence"].startswith("Adam.step(): eps 1e-08 is 0 in float16")
    assert "raise eps to 1e-4" in verdict["fix"]


def test_a_nan_optimizer_state_in_a_checkpoint_folder_is_named(tmp_path: Path) -> None:
    model, opt, x = _broken(torch.float32, nan_grad=True)
    folder = tmp_path / "checkpoint-500"
    folder.mkdir()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    torch.save(opt.state_dict(), folder / "optimizer.pt")
    verdict = _trace(tmp_path, folder, x)
    assert verdict["cause"] == "nonfinite_parameter"
    assert any("Adam's exp_avg_sq of 0.weight holds 1 non-finite value" in e for e in verdict["evidence"])
    assert "reload it together with the weights" in verdict["fix"]


def test_without_an_optimizer_state_the_verdict_is_the_plain_one(tmp_path: Path) -> None:
    model, _, x = _broken(torch.float16)
    torch.save({"model_state_dict": model.state_dict()}, tmp_path / "ckpt.pt")
    verdict = _trace(tmp_path, tmp_path / "ckpt.pt", x, HALF_FACTORY)
    assert verdict["cause"] == "nonfinite_parameter" and "Adam" not in verdict["summary"]
    assert "lower the learning rate" in verdict["fix"]


def test_a_saved_state_that_does_not_fit_the_model_is_not_used() -> None:
    model, opt, _ = _broken(torch.float32)
    other = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 1))  # same count of tensors, other shapes
    assert saved_optimizer(opt.state_dict(), other) is None
    assert saved_optimizer({"state": {}, "param_groups": [{"params": [9]}]}, model) is None  # index out of range
    assert saved_optimizer({"nope": 1}, model) is None
    fit = saved_optimizer(opt.state_dict(), model)
    assert fit is not None and fit.name == "Adam" and len(fit.state) == 4
    assert fit.param_groups[0]["eps"] == 1e-8 and fit.param_groups[0]["params"][0] is model[0].weight


def test_a_trainer_folder_log_history_makes_the_divergence_the_verdict(tmp_path: Path) -> None:
    """A Hugging Face Trainer checkpoint folder: the weights are already Inf, and trainer_state.json's log shows
    the loss and gradient norm growing tenfold per logging step from step 60: the run diverged there."""
    torch.manual_seed(0)
    model = make_net()
    with torch.no_grad():
        model[2].weight[0, :4] = float("inf")
    folder = tmp_path / "checkpoint-200"
    folder.mkdir()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    log = [{"step": s, "epoch": s / 100, "loss": 2.0 - s / 100, "grad_norm": 1.0, "learning_rate": 0.5}
           for s in range(10, 61, 10)]
    log += [{"step": s, "epoch": s / 100, "loss": 1.4 * 10 ** ((s - 60) / 10), "grad_norm": 10 ** ((s - 60) / 10),
             "learning_rate": 0.5} for s in range(70, 201, 10)]
    log.append({"step": 200, "train_runtime": 12.5})  # an entry with nothing to read
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 200, "log_history": log}))
    verdict = _trace(tmp_path, folder, torch.randn(8, 16))
    assert verdict["cause"] == "training_divergence"
    assert verdict["root"]["step"] == 60
    assert "the learning rate in effect was 0.5" in verdict["fix"]
    assert any("rejected nonfinite_parameter" in line for line in verdict["evidence"])
