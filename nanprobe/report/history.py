"""A report's history rows (one per step, free-form keys): the keys of the outlier row the monitor logs at a step
whose batch jumped, in one place for the monitor that writes them, the verdict that reads them and the renderers
that show them (one line per such step instead of four mostly empty columns)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["OUTLIER_FIELDS", "describe_outlier", "outlier_lines", "outlier_of", "table_keys"]

OUTLIER_FIELDS = ("outlier_input", "outlier_row", "outlier_absmax", "outlier_median")
"""Which input, which row of the batch, its |max|, and the median |max| of the batch's rows."""


def outlier_of(row: Mapping[str, Any]) -> tuple[str, int, float, float] | None:
    """(input, row, |max|, median row |max|) of one history row, when it holds a complete outlier record."""
    path, index, absmax, median = (row.get(k) for k in OUTLIER_FIELDS)
    numbers = [v for v in (index, absmax, median) if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not isinstance(path, str) or len(numbers) != 3 or not float(numbers[2]) > 0:
        return None
    return path, int(numbers[0]), float(numbers[1]), float(numbers[2])


def describe_outlier(path: str, row: int, absmax: float, median: float) -> str:
    return (f"row {row} of its input {path} has |max| {absmax:.3g}, {absmax / median:.3g} times the median "
            f"row's {median:.3g}")


def table_keys(history: Sequence[Mapping[str, Any]]) -> list[str]:
    """The columns of a history table: every key but ``step`` and the outlier fields, sorted."""
    return sorted({k for r in history for k in r if k != "step" and k not in OUTLIER_FIELDS})


def outlier_lines(history: Sequence[Mapping[str, Any]]) -> list[str]:
    """``step k: row r of its input ... has |max| ...`` for each row that holds an outlier record."""
    found = [(r.get("step"), outlier_of(r)) for r in history]
    return [f"step {step}'s batch: {describe_outlier(*o)}" for step, o in found if o is not None]
