"""Bounded per-step history of scalars (loss, grad norm, learning rate, ...): a ring buffer of plain floats."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

import torch

from nanprobe.report import to_plain

__all__ = ["LABEL", "History", "scalar"]

LABEL = 200
"""Text values (labels, such as which input held an outlier row) are kept up to this many characters."""


def scalar(value: Any) -> float | None:
    """A plain float from a Python number or a one-element tensor (one host read), else None."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            value = value.detach().float().mean()
        return float(value.detach().reshape(()).item())
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class History:
    """One record per step, ``{"step": k, "loss": ..., ...}``; at most ``maxlen`` records are kept.

    Values logged for the same step are merged into one record (found among the newest). Nothing but Python
    floats is stored, and short labels as text (which input of a batch held an outlier row)."""

    def __init__(self, maxlen: int = 200) -> None:
        if maxlen < 1:
            raise ValueError(f"history must keep at least one step, not {maxlen}")
        self.maxlen = maxlen
        self._records: deque[dict[str, Any]] = deque(maxlen=maxlen)
        self.total = 0  # records ever closed

    def __len__(self) -> int:
        return len(self._records)

    def log(self, step: int, values: Mapping[str, Any]) -> None:
        clean: dict[str, Any] = {}
        for key, value in values.items():
            number = value[:LABEL] if isinstance(value, str) else scalar(value)
            if number is not None:
                clean[key] = number
        if not clean:
            return
        for record in reversed(self._records):  # the step's record, also when a newer one exists (a value
            if record["step"] == step:           # read back late, or a framework hook that runs before the step's
                record.update(clean)             # model call)
                return
            if record["step"] < step:
                break
        self._records.append({"step": step, **clean})
        self.total += 1

    def tail(self, n: int | None = None) -> list[dict[str, Any]]:
        """The last ``n`` records (all kept when None), JSON-ready (non-finite floats become strings)."""
        records = list(self._records)
        if n is not None:
            records = records[-n:] if n > 0 else []
        return [to_plain(r) for r in records]
