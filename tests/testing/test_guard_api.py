"""``NanGuard`` used directly (what the fixture wraps): exact RNG replay, nested calls, transforms."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nanprobe.errors import NonFiniteError
from nanprobe.testing import NanGuard, iter_hook_dicts


class DropDivide(nn.Module):
    """1 / dropout(1): Inf exactly where dropout dropped, so the failing rows depend on the RNG."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.3)
        self.div = Reciprocal()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.div(self.drop(x))


class Reciprocal(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.0 / x


def test_localization_replays_the_failing_call_with_its_rng() -> None:
    torch.manual_seed(3)
    model = DropDivide()
    with pytest.raises(NonFiniteError) as caught, NanGuard() as guard:
        guard.watch(model, name="dd")
        for _ in range(5):
            model(torch.ones(8, 4))
    failure = guard.failures[0]
    assert failure.kind == "inf" and failure.samples  # some rows had a dropped unit
    assert failure.first_nonfinite is not None
    assert failure.first_nonfinite["module"] == "div"
    assert failure.first_nonfinite["samples"] == list(failure.samples)  # same dropout mask when replayed
    assert "Inf reached the output of watched model 'dd' (call #0, train mode)" in str(caught.value)
    assert not [name for name, d in iter_hook_dicts([model]) if d and not name.startswith("_global_")]


def test_only_top_level_calls_are_checked_and_transforms_are_left_alone() -> None:
    inner = nn.Linear(3, 3)
    outer = nn.Sequential(inner, nn.ReLU())
    guard = NanGuard()
    try:
        guard.auto = True
        guard.install()
        outer(torch.randn(2, 3))
        assert [m for m in guard.models] == [outer]  # inner was called inside outer: not top level
        out = torch.func.vmap(inner)(torch.randn(5, 3))  # values under a transform can't be read: skipped
        assert out.shape == (5, 3)
        with torch.no_grad():
            inner.weight[0, 0] = float("nan")
        with pytest.raises(NonFiniteError, match="NaN reached the output of watched model 'Linear'"):
            inner(torch.randn(2, 3))
    finally:
        guard.remove()
    assert guard.models == []


def test_the_guard_keeps_the_encoder_fast_path_and_sees_its_nan() -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, batch_first=True).eval()
    x = torch.randn(3, 4, 8)
    pad = torch.zeros(3, 4, dtype=torch.bool)
    pad[1] = True  # sample 1 is all padding: no key to attend to
    with torch.no_grad():
        assert torch.isnan(layer(x, src_key_padding_mask=pad)[1]).all()  # the native fast path's NaN
    with pytest.raises(NonFiniteError) as caught, NanGuard() as guard, torch.no_grad():
        guard.watch(layer, name="encoder")
        layer(x, src_key_padding_mask=pad)
    message = str(caught.value)
    assert "NaN reached the output of watched model 'encoder' (call #0, eval mode) in samples [1]" in message
    assert "phase forward, kind nan, samples [1]" in message
    assert guard.failures[0].first_nonfinite["op"] == "aten._transformer_encoder_layer_fwd"
