"""The batch calling convention and sample selection, including sequence-first layouts."""

from __future__ import annotations

import torch
from torch import nn

from nanprobe.batches import ModelCall, batch_size, call_model, select_samples


def test_batch_size_is_the_shared_leading_size() -> None:
    assert batch_size({"ids": torch.zeros(3, 7, dtype=torch.long), "y": torch.zeros(3)}) == 3
    assert batch_size(ModelCall((torch.zeros(6, 2),), {"m": torch.zeros(6)})) == 6
    assert batch_size(torch.tensor(1.0)) is None and batch_size({"note": "x"}) is None


def test_sequence_first_inputs_take_the_batch_size_of_the_padding_mask() -> None:
    x, pad = torch.randn(5, 4, 8), torch.zeros(4, 5, dtype=torch.bool)  # (L, B, E) and (B, L)
    assert batch_size((x, pad)) == 4
    sub_x, sub_pad = select_samples((x, pad), [1, 3])
    assert torch.equal(sub_x, x[:, [1, 3]]) and torch.equal(sub_pad, pad[[1, 3]])


def test_select_samples_leaves_tensors_without_the_batch_dimension() -> None:
    batch = {"ids": torch.arange(12).view(4, 3), "causal": torch.ones(3, 3), "scale": torch.tensor(2.0)}
    sub = select_samples(batch, [0, 2])
    assert torch.equal(sub["ids"], batch["ids"][[0, 2]])
    assert sub["causal"] is batch["causal"] and sub["scale"] is batch["scale"]


def test_call_model_follows_the_contract() -> None:
    class Echo(nn.Module):
        def forward(self, *args: object, **kwargs: object) -> tuple[object, object]:
            return args, kwargs

    m, t = Echo(), torch.zeros(1)
    assert call_model(m, {"a": t}) == ((), {"a": t})
    assert call_model(m, (t, t)) == ((t, t), {})
    assert call_model(m, t) == ((t,), {})
    assert call_model(m, ModelCall((t,), {"b": t})) == ((t,), {"b": t})
