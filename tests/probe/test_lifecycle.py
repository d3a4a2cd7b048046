"""Hooks are owned and removed; bounded memory; train/eval untouched; backward origin."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nanprobe.errors import InputError, NanprobeError
from nanprobe.probe import Probe, probe_model
from tests.probe import models

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")


def assert_no_hooks(model: nn.Module) -> None:
    for name, m in model.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            assert len(getattr(m, attr)) == 0, (name, attr)
    for p in model.parameters():
        assert not getattr(p, "_post_accumulate_grad_hooks", None), "param hook left"


def test_hooks_removed_after_raising_forward() -> None:
    model = nn.Sequential(nn.Linear(2, 2), models.Boom(), nn.ReLU())
    with pytest.raises(RuntimeError, match="boom"), Probe(model, backward=True):
        assert len(model[0]._forward_hooks) == 1 and len(model[0]._backward_hooks) == 1
        model(torch.randn(1, 2))
    assert_no_hooks(model)


def test_hooks_removed_after_clean_exit_and_flags_untouched() -> None:
    model = models.mlp()
    model.train()
    model[2].eval()
    with Probe(model, backward=True):
        model(torch.randn(2, 4)).sum().backward()
    assert_no_hooks(model)
    assert model.training and model[0].training and not model[2].training


def test_reentering_the_same_probe_is_refused_and_bad_options_raise() -> None:
    model = models.mlp()
    probe = Probe(model)
    with probe, pytest.raises(NanprobeError), probe:
        pass
    assert_no_hooks(model)
    with pytest.raises(InputError):
        Probe(model, ring_size=0)
    with pytest.raises(InputError):
        Probe(model, include=[1])  # type: ignore[list-item]


def test_ring_bounds_records_over_10000_calls() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    x = torch.randn(1, 2)
    with torch.no_grad(), Probe(model, ring_size=256, keep_nonfinite=8) as probe:
        for _ in range(10_000):
            model(x)
        bad = x.clone()
        bad[0, 0] = math.nan
        model(bad)
        for _ in range(500):
            model(x)
    result = probe.result()
    assert result.calls == 3 * 10_501
    # the last 256 + the first 8 non-finite (+ the origin record, here the <input>, not in records)
    assert len(result.records) == 256 + 3
    assert sum(r.role == "propagated" for r in result.records) == 3
    assert result.origin.module == "<input>" and result.origin.step == 10_001
    assert len(probe._classifier.ring) == 256 and len(probe._queue) == 0 and len(probe._seen) <= 3


def test_sqrt_zero_in_backward_is_backward_origin() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), models.Sqrt(), nn.Linear(3, 1))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.zero_()
    x = torch.randn(4, 3)
    result = probe_model(model, x, backward=True)
    assert result.origin is None  # forward is finite
    assert result.status == "nonfinite"
    bo = result.backward_origin
    assert bo is not None and bo.module == "2" and bo.module_type == "Sqrt" and bo.phase == "backward"
    assert bo.inputs_finite and bo.kind == "inf" and bo.role == "origin"
    assert result.first_nonfinite()["phase"] == "backward" and result.first_nonfinite()["module"] == "2"
    assert_no_hooks(model)


def test_backward_nan_param_grad_is_attributed() -> None:
    class Pow(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.zeros(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sqrt(self.scale) * x  # d/dscale at 0 is inf

    model = nn.Sequential(Pow(), nn.Linear(3, 1))
    result = probe_model(model, torch.ones(2, 3), backward=True)
    bo = result.backward_origin
    assert bo is not None and bo.module == "0" and "grad.scale" in bo.outputs
    assert bo.outputs["grad.scale"].nonfinite == 3 and bo.kind == "inf"


def test_backward_clean() -> None:
    result = probe_model(models.mlp(), torch.randn(2, 4), backward=True)
    assert result.status == "clean" and result.backward_origin is None


def test_backward_without_grad_is_input_error() -> None:
    with torch.no_grad(), pytest.raises(InputError):
        probe_model(models.mlp(), torch.randn(2, 4), backward=True)


def test_caught_child_error_and_reuse_after_raise_keep_nesting_right() -> None:
    class Fallback(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.boom = models.Boom()
            self.log = models.Log()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            try:
                return self.boom(x)
            except RuntimeError:
                return self.log(x)

    model = nn.Sequential(Fallback(), nn.Linear(2, 2))
    with Probe(model) as probe:
        with pytest.raises(RuntimeError):
            model[0].boom(torch.ones(1, 2))  # raises outside any caller: a stale frame is left
        model(torch.tensor([[0.0, 1.0], [1.0, 1.0]]))
    result = probe.result()
    recs = {r.module: r for r in result.records if r.step == 2}
    assert recs["0.log"].parent == recs["0"].index and recs["0"].parent == recs[""].index
    assert result.origin.module == "0.log" and result.origin.samples == [0]
    assert "0.boom" not in recs  # its call raised: no record


def test_inplace_module_with_backward_gets_a_clear_error() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(inplace=True), nn.Linear(3, 1))
    with pytest.raises(NanprobeError, match="inplace=False"):
        probe_model(model, torch.randn(2, 3), backward=True)
    assert_no_hooks(model)
    assert probe_model(model, torch.randn(2, 3)).status == "clean"
