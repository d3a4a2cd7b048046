"""Batches: how a batch is passed to a model, and structure-preserving maps over it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["ModelCall", "batch_size", "call_model", "cast_floating", "map_tensors", "select_samples", "to_device"]


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


def _first_batched(obj: Any) -> torch.Tensor | None:
    """The first tensor with at least one dimension, depth first, without rebuilding anything."""
    if isinstance(obj, torch.Tensor):
        return obj if obj.dim() > 0 else None
    if isinstance(obj, ModelCall):
        found = _first_batched(obj.args)
        return found if found is not None else _first_batched(obj.kwargs)
    if isinstance(obj, (tuple, list)):
        values: Any = obj
    elif isinstance(obj, Mapping):
        values = obj.values()
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        values = (getattr(obj, f.name) for f in dataclasses.fields(obj))
    else:
        return None
    for value in values:
        found = _first_batched(value)
        if found is not None:
            return found
    return None


def batch_size(batch: Any) -> int | None:
    """Size of dim 0 of the first tensor with at least one dimension, or None."""
    first = _first_batched(batch)
    return None if first is None else int(first.shape[0])


def select_samples(batch: Any, indices: Sequence[int]) -> Any:
    """The sub-batch of rows ``indices``: every tensor whose dim 0 equals the batch size is indexed."""
    size = batch_size(batch)
    if size is None:
        return batch
    index = torch.as_tensor(list(indices), dtype=torch.long)

    def pick(t: torch.Tensor) -> torch.Tensor:
        if t.dim() > 0 and t.shape[0] == size:
            return t.index_select(0, index.to(t.device))
        return t

    return map_tensors(batch, pick)


def to_device(batch: Any, device: torch.device | str) -> Any:
    return map_tensors(batch, lambda t: t.to(device))


def cast_floating(batch: Any, dtype: torch.dtype) -> Any:
    """Floating tensors to ``dtype``; integer, bool and complex tensors unchanged."""
    return map_tensors(batch, lambda t: t.to(dtype) if t.is_floating_point() else t)
