"""Writing the machine report (``--json``): strict JSON, one place for every command."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from nanprobe.errors import InputError

__all__ = ["strict_json", "write_json"]


def strict_json(value: Any) -> Any:
    """NaN/Inf floats (e.g. a layer's max) become the strings "nan", "inf", "-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def _default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def write_json(path: str, report: dict[str, Any]) -> None:
    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(strict_json(report), f, indent=2, default=_default, allow_nan=False)
            f.write("\n")
    except OSError as e:
        raise InputError(f"cannot write --json {path!r}: {e.strerror or e}") from e
