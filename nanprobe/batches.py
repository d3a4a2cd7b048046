"""Batches: how a batch is passed to a model, and structure-preserving maps over it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["ModelCall", "batch_layout", "batch_size", "call_model", "cast_floating", "map_tensors", "select_samples",
           "to_device"]


@dataclasses.dataclass
class ModelCall:
    """A captured call with both positional and keyword arguments (what a forward pre-hook sees)."""

    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def simplest(self) -> Any:
        """The plainest batch form that calls the same way: a tuple, a dict, or this object."""
        if not self.kwargs:
            return tuple(self.args)
        if not self.args:
            return dict(self.kwargs)
        return self


def call_model(model: nn.Module, batch: Any) -> Any:
    """The contract's calling convention: dict -> ``model(**b)``, tuple/list -> ``model(*b)``, else ``model(b)``.
    A :class:`ModelCall` passes both its args and kwargs."""
    if isinstance(batch, ModelCall):
        return model(*batch.args, **batch.kwargs)
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, (tuple, list)) and not _is_namedtuple(batch):
        return model(*batch)
    return model(batch)


def _is_namedtuple(obj: Any) -> bool:
    return isinstance(obj, tuple) and hasattr(obj, "_fields")


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """Apply ``fn`` to every tensor leaf of a nested structure, keeping the structure's type."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if _is_namedtuple(obj):
        return type(obj)(*(map_tensors(v, fn) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(map_tensors(v, fn) for v in obj)
    if isinstance(obj, Mapping):
        items = {k: map_tensors(v, fn) for k, v in obj.items()}
        try:
            return type(obj)(items)
        except TypeError:
            return items
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: map_tensors(getattr(obj, f.name), fn) for f in dataclasses.fields(obj) if f.init}
        return dataclasses.replace(obj, **changes)
    return obj


def _batched_leaves(obj: Any, found: list[torch.Tensor]) -> list[torch.Tensor]:
    """Tensors with at least one dimension, depth first, without rebuilding anything."""
    if isinstance(obj, torch.Tensor):
        if obj.dim() > 0:
            found.append(obj)
        return found
    if isinstance(obj, ModelCall):
        _batched_leaves(obj.args, found)
        return _batched_leaves(obj.kwargs, found)
    if isinstance(obj, (tuple, list)):
        values: Any = obj
    elif isinstance(obj, Mapping):
        values = obj.values()
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        values = (getattr(obj, f.name) for f in dataclasses.fields(obj))
    else:
        return found
    for value in values:
        _batched_leaves(value, found)
    return found


def _size_of(leaves: list[torch.Tensor]) -> tuple[int | None, bool]:
    """(batch size, whether the batch is sequence-first)."""
    if not leaves:
        return None, False
    first = leaves[0]
    size = int(first.shape[0])
    if first.dim() >= 3 and first.is_floating_point() and any(int(t.shape[0]) != size for t in leaves):
        # PyTorch's sequence-first layout: (L, B, E) inputs with a (B, L) padding mask or ids
        length, batch = size, int(first.shape[1])
        for t in leaves:
            if t.dim() == 2 and not t.is_floating_point() and tuple(t.shape) == (batch, length):
                return batch, True
    return size, False


def batch_size(batch: Any) -> int | None:
    """Dim 0 of the first batched tensor; for sequence-first inputs ((L, B, E) beside a (B, L) mask), B."""
    return _size_of(_batched_leaves(batch, []))[0]


def batch_layout(batch: Any) -> tuple[int | None, bool]:
    """(:func:`batch_size`, whether the batch is sequence-first: its samples along dim 1 of the 3-d inputs)."""
    return _size_of(_batched_leaves(batch, []))


def select_samples(batch: Any, indices: Sequence[int]) -> Any:
    """The sub-batch of rows ``indices``: tensors whose dim 0 is the batch size are indexed along it; in a
    sequence-first batch, tensors indexed along their dim 1 when that is the batch size instead."""
    size, seq_first = _size_of(_batched_leaves(batch, []))
    if size is None:
        return batch
    index = torch.as_tensor(list(indices), dtype=torch.long)

    def pick(t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 0:
            return t
        if t.shape[0] == size:
            return t.index_select(0, index.to(t.device))
        if seq_first and t.dim() >= 2 and t.shape[1] == size:
            return t.index_select(1, index.to(t.device))
        return t

    return map_tensors(batch, pick)


def to_device(batch: Any, device: torch.device | str) -> Any:
    return map_tensors(batch, lambda t: t.to(device))


def cast_floating(batch: Any, dtype: torch.dtype) -> Any:
    """Floating tensors to ``dtype``; integer, bool and complex tensors unchanged."""
    return map_tensors(batch, lambda t: t.to(dtype) if t.is_floating_point() else t)
