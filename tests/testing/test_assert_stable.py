"""``assert_stable`` names the variant that breaks a model, and restores the model after each run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nanprobe.errors import NonFiniteError
from nanprobe.testing import Variant, assert_stable


class MeanPool(nn.Module):
    """Mean of the non-padding embeddings: 0/0 for an all-padding row."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4, padding_idx=0)
        self.pool = Divide()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        keep = (ids != 0).float().unsqueeze(-1)  # (B, L, 1)
        return self.pool((self.emb(ids) * keep).sum(1), keep.sum(1))


class Divide(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a / b


class Standardize(nn.Module):
    """(x - mean) / std with no epsilon: NaN for a constant row."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True)


def test_all_padding_sample_is_named_with_the_origin() -> None:
    ids = torch.tensor([[0, 3, 4], [1, 2, 5], [0, 0, 7]])
    with pytest.raises(NonFiniteError) as caught:
        assert_stable(MeanPool(), lambda: ids)  # padding id 0 found from nn.Embedding(padding_idx=0)
    message = str(caught.value)
    assert "assert_stable(MeanPool): 2 of 8 runs failed" in message
    assert "train / an all-padding sample (last row set to padding id 0): NaN in output samples [2]" in message
    assert "eval / an all-padding sample" in message
    assert "origin: module 'pool' (Divide), phase forward, kind nan, samples [2]" in message


def test_zero_variance_and_batch_of_one_and_gradients() -> None:
    model = nn.Sequential(Standardize(), nn.Linear(3, 3), nn.BatchNorm1d(3))
    model.eval()
    running = model[2].running_mean.clone()
    report = assert_stable(model, torch.randn(4, 3), raise_on_failure=False)
    failed = {r.name: r for r in report.failures}
    assert set(failed) == {"train/batch_size_1", "train/zero_variance", "eval/zero_variance"}
    assert failed["train/batch_size_1"].status == "error"  # BatchNorm refuses one value per channel
    assert "Expected more than 1 value per channel" in failed["train/batch_size_1"].error
    assert failed["eval/zero_variance"].first_nonfinite["module"] == "0"
    # each run restored the model: mode flag and BatchNorm running stats
    assert not model.training
    assert torch.equal(model[2].running_mean, running)
    frame = report.to_frame()
    assert len(frame) == 10 and set(frame["status"]) == {"ok", "error", "nonfinite", "skipped"}


def test_gradient_failure_and_only_errors_raise_assertion_error() -> None:
    class SqrtHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sqrt(self.lin(x) * 0)  # finite forward, infinite gradient

    report = assert_stable(SqrtHead(), torch.ones(3, 2), variants=["base"], raise_on_failure=False)
    assert [(r.name, r.where) for r in report.failures] == [("train/base", "gradients")]
    assert report.failures[0].paths == ["lin.weight", "lin.bias"]

    boom = Variant("boom", "a variant that raises", transform=lambda b: torch.ones(1, 3))  # wrong width
    with pytest.raises(AssertionError, match="a variant that raises"):
        assert_stable(nn.Linear(2, 2), torch.ones(1, 2), variants=[boom])
    with pytest.raises(ValueError, match="unknown variant 'bogus'"):
        assert_stable(nn.Linear(2, 2), torch.ones(1, 2), variants=["bogus"])
