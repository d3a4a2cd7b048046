"""The check registry, the call a check looks at, and the evidence it returns."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from nanprobe.knowledge.names import key

__all__ = ["CHECKS", "CHECK_OPS", "Evidence", "OpCall", "check", "fmt", "rows_where", "run_check"]


@dataclass(frozen=True)
class Evidence:
    """What a check measured: one short sentence and, when the values carry a batch dimension, the rows
    (indices along dim 0) where the condition holds."""

    text: str
    rows: tuple[int, ...] | None = None

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class OpCall:
    """An op's arguments as the aten op received them (``op`` may be any spelling: ``aten.log.default``)."""

    op: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The op's lookup key: ``aten.log_.default`` -> ``log``; ``aten._softmax`` -> ``softmax``."""
        return key(self.op)

    def get(self, index: int, name: str, default: Any = None) -> Any:
        """The argument at position ``index`` or keyword ``name``."""
        if index < len(self.args):
            return self.args[index]
        return self.kwargs.get(name, default)

    def tensor(self, index: int, name: str) -> torch.Tensor | None:
        value = self.get(index, name)
        return value if isinstance(value, torch.Tensor) else None

    def floats(self) -> list[torch.Tensor]:
        """Every floating-point tensor among the arguments, in order."""
        return [t for t in _flat((self.args, dict(self.kwargs))) if t.is_floating_point()]


CheckFn = Callable[[OpCall], "Evidence | None"]
CHECKS: dict[str, CheckFn] = {}
# check id -> the op keys (see names.key) whose argument layout it reads; absent: any op.
CHECK_OPS: dict[str, frozenset[str]] = {}


def check(check_id: str, ops: Iterable[str] = ()) -> Callable[[CheckFn], CheckFn]:
    """Register a check under ``check_id`` (the id the table's conditions name). ``ops`` lists the ops
    (any spelling) whose arguments it knows how to read; on other ops it is not run."""

    def register(fn: CheckFn) -> CheckFn:
        if check_id in CHECKS:
            raise ValueError(f"check {check_id!r} registered twice")
        CHECKS[check_id] = fn
        if ops:
            CHECK_OPS[check_id] = frozenset(key(o) for o in ops)
        return fn

    return register


def run_check(check_id: str, op: str, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, *,
              strict: bool = False) -> Evidence | None:
    """Evidence that condition ``check_id`` holds on these arguments of ``op``, else None.

    Arguments laid out differently from what the check expects (another overload, a Python-level function)
    give None, unless ``strict``, which re-raises the error (for tests)."""
    try:
        fn = CHECKS[check_id]
    except KeyError:
        raise KeyError(f"unknown check {check_id!r}; known: {', '.join(sorted(CHECKS))}") from None
    allowed = CHECK_OPS.get(check_id)
    if allowed is not None and key(op) not in allowed:
        return None
    try:
        with torch.no_grad():
            return fn(OpCall(op, tuple(args), dict(kwargs or {})))
    except (TypeError, ValueError, IndexError, KeyError, RuntimeError):
        if strict:
            raise
        return None


# ---------------------------------------------------------------------------------------------- helpers
def _flat(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for v in obj for t in _flat(v)]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _flat(v)]
    return []


def fmt(value: float | int | torch.Tensor) -> str:
    """A number as evidence shows it: ``0.0``, ``-1``, ``3.4e+38``."""
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isinf(value) or math.isnan(value):
        return str(value)
    if value == int(value) and abs(value) < 1e6:
        return f"{value:.1f}"
    return f"{value:.4g}"


def rows_where(mask: torch.Tensor, limit: int = 12) -> tuple[tuple[int, ...] | None, str]:
    """The dim-0 rows where ``mask`` holds, and how evidence names them (" in rows [2, 5]")."""
    if mask.dim() == 0:
        return None, ""
    rows = tuple(int(i) for i in mask.reshape(mask.shape[0], -1).any(dim=1).nonzero().flatten().tolist())
    shown = ", ".join(map(str, rows[:limit])) + (", ..." if len(rows) > limit else "")
    return rows, f" in rows [{shown}]"
