"""The one JSON writer: every JSON file nanprobe writes is strict JSON made by :func:`to_plain`.

Non-finite floats (a layer's max, a NaN loss in the history) become the strings ``"nan"``, ``"inf"`` and
``"-inf"``; tuples and sets become lists; tensors become lists (small) or a short description; paths and
other objects become strings; objects with a ``to_dict()`` are written as that.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nanprobe.report.validate import is_report, strict, validate_report

__all__ = ["dumps", "to_plain", "write_json"]

_TENSOR_LIMIT = 64


def _float(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def to_plain(value: Any) -> Any:
    """JSON-ready data (see the module docstring); strings, ints, bools and None pass unchanged."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return _float(value)
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict) and not isinstance(value, type):
        return to_plain(to_dict())
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [to_plain(v) for v in items]
    if isinstance(value, Path):
        return str(value)
    tolist = getattr(value, "tolist", None)  # tensors and numpy values
    if callable(tolist):
        numel = getattr(value, "numel", None)
        size = numel() if callable(numel) else getattr(value, "size", 0)
        if isinstance(size, int) and size > _TENSOR_LIMIT:
            return f"<tensor {tuple(getattr(value, 'shape', ()))}>"
        return to_plain(tolist())
    return str(value)


def dumps(value: Any, *, indent: int | None = 2) -> str:
    """Strict JSON text of ``value`` (``allow_nan=False``: a NaN that slipped through is a bug, not output).
    A report document is checked against the shipped schema first when strict checking is on
    (:func:`nanprobe.report.validate.strict`)."""
    plain = to_plain(value)
    if strict() and is_report(plain):
        validate_report(plain)
    return json.dumps(plain, indent=indent, allow_nan=False)


def write_json(path: str | Path, value: Any) -> Path:
    """Write ``value`` as strict JSON (with a final newline) to ``path``; OSError propagates."""
    target = Path(path)
    target.write_text(dumps(value) + "\n", encoding="utf-8")
    return target
