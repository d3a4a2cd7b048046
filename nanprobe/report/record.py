"""``Record``: the base of nanprobe's report types — a dataclass that converts itself to and from plain data.

Fields are read by attribute (``verdict.cause``) and, for code written against 0.1's plain dicts, by key
(``verdict["cause"]``, ``first.get("samples")``, ``dict(first)``). ``to_dict()`` gives plain Python data
(nested records and lists converted, ``None`` dropped for the fields named in ``OMIT_NONE``) and
``from_dict()`` builds the record back from it, nested records included, ignoring unknown keys.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, TypeVar

__all__ = ["Record", "field_types"]

R = TypeVar("R", bound="Record")


class Record:
    """Mixin for ``@dataclass(eq=False)`` report types (see the module docstring). A record equals another
    of its type with equal fields, and a mapping equal to its :meth:`to_dict`."""

    OMIT_NONE: ClassVar[frozenset[str]] = frozenset()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Record):
            return type(other) is type(self) and self.to_dict() == other.to_dict()
        if isinstance(other, Mapping):
            return self.to_dict() == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    # -- mapping-style reads -------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        if key in _names(type(self)):
            return getattr(self, key)
        raise KeyError(key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in _names(type(self)):
            raise KeyError(f"{type(self).__name__} has no field {key!r}")
        setattr(self, key, value)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self.keys()

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in _names(type(self)) else default

    def keys(self) -> list[str]:
        """The keys :meth:`to_dict` writes (fields in ``OMIT_NONE`` that are ``None`` are left out)."""
        return [n for n in _names(type(self)) if not (n in self.OMIT_NONE and getattr(self, n) is None)]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    # -- conversion ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in _names(type(self)):
            value = getattr(self, name)
            if value is None and name in self.OMIT_NONE:
                continue
            out[name] = _as_data(value)
        return out

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
        """Build from plain data (what :meth:`to_dict` or a JSON file gives); unknown keys are ignored."""
        hints = field_types(cls)
        kwargs = {k: _convert(hints[k], v) for k, v in data.items() if k in hints}
        return cls(**kwargs)


def _as_data(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_as_data(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_data(v) for k, v in value.items()}
    return value


@functools.cache
def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """Resolved type hints of a dataclass's fields, in field order."""
    hints = typing.get_type_hints(cls)
    return {name: hints[name] for name in _names(cls)}


def _convert(hint: Any, value: Any) -> Any:
    return _converter(hint)(value)


@functools.cache
def _converter(hint: Any) -> Callable[[Any], Any]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        inner = _converter(options[0]) if len(options) == 1 else (lambda v: v)
        return lambda v: None if v is None else inner(v)
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        each = _converter(item)
        return lambda v: [each(x) for x in v] if isinstance(v, (list, tuple)) else v
    if isinstance(hint, type) and issubclass(hint, Record):
        return lambda v: hint.from_dict(v) if isinstance(v, Mapping) else v
    if hint is float:  # strict JSON spells non-finite floats "nan", "inf", "-inf"
        return lambda v: float(v) if isinstance(v, str) and v in _NON_FINITE else v
    return lambda v: v


_NON_FINITE = ("nan", "inf", "-inf")
