"""A report's history rows (one per step, free-form keys): the outlier row the monitor logs at a step whose batch
jumped, one record type for the monitor that writes it, the verdict that reads it and the renderers that show it
(one line per such step instead of four mostly empty columns)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["OUTLIER_FIELDS", "Outlier", "outlier_lines", "table_keys"]

OUTLIER_FIELDS = ("outlier_input", "outlier_row", "outlier_absmax", "outlier_median")
"""Which input, which row of the batch, its |max|, and the median |max| of the batch's rows."""


@dataclass(frozen=True)
class Outlier:
    """Row ``row`` of input ``path`` has |max| ``absmax``; the batch's rows have a median |max| of ``median``."""

    path: str
    row: int
    absmax: float
    median: float

    def record(self) -> dict[str, Any]:
        """The history keys it is logged under (:data:`OUTLIER_FIELDS`)."""
        return dict(zip(OUTLIER_FIELDS, (self.path, self.row, self.absmax, self.median)))

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Outlier | None:
        """The outlier a history row holds, when its record is complete."""
        path, index, absmax, median = (row.get(k) for k in OUTLIER_FIELDS)
        numbers = [v for v in (index, absmax, median) if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if not isinstance(path, str) or len(numbers) != 3 or not float(numbers[2]) > 0:
            return None
        return cls(path, int(numbers[0]), float(numbers[1]), float(numbers[2]))

    def describe(self) -> str:
        return (f"row {self.row} of its input {self.path} has |max| {self.absmax:.3g}, "
                f"{self.absmax / self.median:.3g} times the median row's {self.median:.3g}")


def table_keys(history: Sequence[Mapping[str, Any]]) -> list[str]:
    """The columns of a history table: every key but ``step`` and the outlier fields, sorted."""
    return sorted({k for r in history for k in r if k != "step" and k not in OUTLIER_FIELDS})


def outlier_lines(history: Sequence[Mapping[str, Any]]) -> list[str]:
    """``step k's batch: row r of its input ... has |max| ...`` for each row that holds an outlier record."""
    found = [(r.get("step"), Outlier.of(r)) for r in history]
    return [f"step {step}'s batch: {o.describe()}" for step, o in found if o is not None]
