"""Paths of tensor leaves in nested structures."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import NamedTuple

import torch

from nanprobe.walk import iter_tensors


class ModelOutputLike(OrderedDict):
    """Mimics Hugging Face ModelOutput: a mapping whose keys are attributes too."""

    def __init__(self, **kwargs: torch.Tensor) -> None:
        super().__init__(**kwargs)
        for k, v in kwargs.items():
            object.__setattr__(self, k, v)


class NT(NamedTuple):
    a: torch.Tensor
    b: object


@dataclasses.dataclass
class DC:
    x: torch.Tensor
    y: list[object]


def test_paths() -> None:
    t = torch.zeros(1)
    obj = (t, {"k": t, 3: [None, t]}, NT(t, "s"), DC(t, [1.0, t]), ModelOutputLike(last_hidden_state=t),
           None, "text")
    paths = [p for p, _ in iter_tensors(obj)]
    assert paths == ["out[0]", "out[1]['k']", "out[1][3][1]", "out[2].a", "out[3].x", "out[3].y[1]",
                     "out[4].last_hidden_state"]


def test_single_tensor_and_prefix() -> None:
    t = torch.ones(2)
    assert [(p, x is t) for p, x in iter_tensors(t, "in")] == [("in", True)]
    assert list(iter_tensors(None)) == [] and list(iter_tensors(5)) == []


def test_cycles_do_not_loop() -> None:
    t = torch.ones(1)
    a: list[object] = [t]
    a.append(a)
    assert [p for p, _ in iter_tensors(a)] == ["out[0]"]
