"""Walk the tensor leaves of a nested structure (module inputs and outputs), naming each by a path.

Path rules, starting from ``prefix`` (``"out"`` by default):

* a tensor is the path itself: ``out``
* tuple / list items: ``out[0]``
* NamedTuple fields and dataclass fields: ``out.field``
* plain ``dict`` keys: ``out['key']`` (non-string keys use ``repr``: ``out[3]``)
* attribute-style mappings (Hugging Face ``ModelOutput`` and other ``Mapping`` subclasses whose string keys
  are also attributes): ``out.last_hidden_state``
* ``None`` and non-tensor leaves are skipped; a container already on the current path is not entered
  again (cycles), and walking stops below a fixed depth.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import torch

__all__ = ["iter_tensors"]

_MAX_DEPTH = 32


def iter_tensors(obj: Any, prefix: str = "out") -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(path, tensor)`` for every tensor leaf of ``obj``, depth first, in container order."""
    yield from _walk(obj, prefix, 0, set())


def _walk(obj: Any, path: str, depth: int, active: set[int]) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield path, obj
        return
    if obj is None or isinstance(obj, (str, bytes, int, float, bool, complex)) or depth >= _MAX_DEPTH:
        return
    key = id(obj)
    if key in active:
        return
    children = _children(obj, path)
    if children is None:
        return
    active.add(key)
    try:
        for child_path, child in children:
            yield from _walk(child, child_path, depth + 1, active)
    finally:
        active.discard(key)


def _children(obj: Any, path: str) -> list[tuple[str, Any]] | None:
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # NamedTuple
        return [(f"{path}.{name}", value) for name, value in zip(obj._fields, obj)]
    if isinstance(obj, (tuple, list)):
        return [(f"{path}[{i}]", value) for i, value in enumerate(obj)]
    if isinstance(obj, Mapping):
        return [(_mapping_path(obj, path, k), v) for k, v in obj.items()]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [(f"{path}.{f.name}", getattr(obj, f.name, None)) for f in dataclasses.fields(obj)]
    return None


def _mapping_path(obj: Mapping[Any, Any], path: str, key: Any) -> str:
    if isinstance(key, str):
        if type(obj) is not dict and key.isidentifier() and _has_attr_value(obj, key):
            return f"{path}.{key}"
        return f"{path}[{key!r}]"
    return f"{path}[{key!r}]"


def _has_attr_value(obj: Any, key: str) -> bool:
    try:
        return getattr(obj, key) is obj[key]
    except Exception:
        return False
