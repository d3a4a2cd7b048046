"""The forward-pass budget, and leaving no trace (model, global switches, caller's RNG)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from nanprobe.diagnosis import diagnose, pass_budget
from tests.diagnosis import models as M


class _Scalar(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.m = M.Deep()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x).sum()


@pytest.mark.parametrize("size", [8, 64, 512])
@pytest.mark.parametrize("factory", [M.Deep, _Scalar, M.FlatLog])
def test_pass_budget(size: int, factory: type[nn.Module]) -> None:
    x = torch.rand(size, 4) + 0.5
    x[size // 3, 0] = 0
    d = diagnose(factory(), [x])
    assert d.status == "nonfinite"
    assert d.verdict["cause"] == "numerical_domain"
    assert d.forward_passes <= pass_budget(size) == int(2 * np.log2(size)) + 12
    assert d.budget == pass_budget(size)
    rows = d.first_nonfinite["samples"]
    if factory is M.FlatLog:  # no batch dim at the producer: the halving search finds the sample
        assert any(r["changes"].get("samples") == [size // 3] and r["nonfinite"] for r in d.replay)
    else:
        assert rows == [size // 3]


def test_pass_budget_for_attention() -> None:
    for size in (8, 64):
        batch = M.fully_masked_batch(size, 6, (1, size - 1))
        d = diagnose(M.MaskedAttention(dropout=0.1).eval(), [batch])
        assert d.forward_passes <= pass_budget(size)
        assert d.first_nonfinite["samples"] == [1, size - 1]


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Same keys, dtypes, shapes and bytes (NaN-safe, unlike ``torch.equal``)."""
    def raw(t: torch.Tensor) -> torch.Tensor:
        return t.detach().contiguous().reshape(-1).view(torch.uint8)

    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(raw(a[k]), raw(b[k])) for k in a)


class _BNModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(4)
        self.drop = nn.Dropout(0.3)
        self.attn = nn.MultiheadAttention(4, 2, dropout=0.2, batch_first=True)
        self.log = M.LogFeature()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.bn(x))[:, None, :]
        h, _ = self.attn(h, h, h)
        return self.log(h.squeeze(1).abs() * 0)


def test_leaves_no_trace() -> None:
    model = _BNModel().half().float()
    model.train()
    model.attn.eval()
    with torch.no_grad():
        model.bn.running_mean.fill_(0.25)
    before = _snapshot(model)
    flags = {n: m.training for n, m in model.named_modules()}
    x = torch.randn(6, 4)
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(7)
    rng = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    fast = torch.backends.mha.get_fastpath_enabled()
    grad = torch.is_grad_enabled()
    d = diagnose(model, [x], mode="train", backward=False)
    assert d.status == "nonfinite"
    assert _bitwise_equal(before, _snapshot(model))
    assert {n: m.training for n, m in model.named_modules()} == flags
    assert model.drop.p == 0.3 and model.attn.dropout == 0.2
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng[0])
    assert random.getstate() == rng[1]
    assert np.array_equal(np.random.get_state()[1], rng[2])
    assert torch.backends.mha.get_fastpath_enabled() == fast and torch.is_grad_enabled() == grad
    assert any(r["variant"] == "dropout p=0" for r in d.replay)
    assert any(r["variant"] == "upcast to float64" for r in d.replay)
    assert all(not m._forward_hooks and not m._forward_pre_hooks and "forward" not in m.__dict__
               for m in model.modules())


class _TrainOnlyError(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError("boom in train mode")
        return torch.log(self.drop(self.lin(x)) * 0)


def test_restores_after_a_variant_raises() -> None:
    model = _TrainOnlyError().eval()
    before = _snapshot(model)
    d = diagnose(model, [torch.randn(3, 4)])
    entry = next(r for r in d.replay if r["variant"] == "train mode")
    assert "boom in train mode" in entry["error"]
    assert "train mode -> raised RuntimeError" in d.verdict["evidence"]
    assert not model.training and model.drop.p == 0.5
    assert _bitwise_equal(before, _snapshot(model))


def test_rng_states_are_used_for_the_control() -> None:
    torch.manual_seed(0)
    state_a = __import__("nanprobe.rng", fromlist=["RNGState"]).RNGState.capture()
    model = M.DropoutRatio(2, 0.5)
    x = torch.randn(16, 2)
    first = diagnose(model, [x], mode="train", rng_states=[state_a], replay=False)
    second = diagnose(model, [x], mode="train", rng_states=[state_a], replay=False)
    assert first.to_dict() == second.to_dict()
    assert first.forward_passes == 2


class _NoCopy(nn.Module):
    """Holds a lock, so it cannot be deep-copied: the upcast replay casts it in place and restores it."""

    def __init__(self) -> None:
        super().__init__()
        import threading

        self.lock = threading.Lock()
        self.lin = nn.Linear(4, 4)
        self.norm = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(self.norm(self.lin(x)).abs() * 0)


def test_upcast_in_place_restores_exactly() -> None:
    model = _NoCopy().half().eval()
    with torch.no_grad():
        model.norm.running_var.fill_(0.7)
    before = _snapshot(model)
    storages = [p.data_ptr() for p in model.parameters()]
    d = diagnose(model, [torch.randn(3, 4, dtype=torch.float16)])
    entry = next(r for r in d.replay if r["variant"] == "upcast to float32")
    assert entry["nonfinite"] is True and "error" not in entry
    assert _bitwise_equal(before, _snapshot(model))
    assert [p.data_ptr() for p in model.parameters()] == storages
    assert all(t.dtype == torch.float16 for t in model.state_dict().values() if t.is_floating_point())


def test_clean_batches_before_the_failing_one_do_not_eat_the_budget() -> None:
    x = torch.rand(8, 4) + 0.5
    x[5, 0] = 0
    clean = [torch.rand(8, 4) + 0.5 for _ in range(30)]
    d = diagnose(M.Deep(), [*clean, x])
    assert d.first_nonfinite["batch_index"] == 30
    assert d.forward_passes - 30 <= pass_budget(8)
    assert any(r["variant"] == "upcast to float64" for r in d.replay)
    assert any(r["variant"].startswith("samples 5 mixed into batch 0") for r in d.replay)
