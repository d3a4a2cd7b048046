"""Off-CPU statistics: device-side vectors stacked and read back in batches (a mixin of the probe)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from nanprobe.probe.records import CallRecord, batch_dim
from nanprobe.stats import stats_from_vector, stats_vector

__all__ = ["ReadBackMixin", "read_back"]


class ReadBackMixin:
    """Pending records hold device tensors (input flags, stats vectors, sample-row flags, extras) until
    :meth:`_flush` reads them all back with one ``cat`` + ``tolist`` per device, decodes them into the
    records and hands the records, in completion order, to ``_process``."""

    _batch: int | None
    _pending: list[tuple[CallRecord, list[torch.Tensor], list[tuple[str, Any]]]]
    _in_inf: dict[int, float]

    _process: Callable[[CallRecord], None]  # provided by the classifier

    def _lazy_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.dtype, tuple[int, ...], torch.Tensor | None]:
        vec = stats_vector(x)
        dim = None
        if self._batch is not None and x.numel():
            dim = batch_dim(x, self._batch)
        rows = None
        if dim is not None:
            y = x.abs() if x.is_complex() else x
            bad = ~torch.isfinite(y) if (y.dtype.is_floating_point) else torch.zeros_like(y, dtype=torch.bool)
            rows = bad.movedim(dim, 0).reshape(self._batch, -1).any(dim=1).to(torch.float64)
        return vec, x.dtype, tuple(x.shape), rows

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        parts: list[torch.Tensor] = []
        for rec, lazy_in, lazy_out in pending:
            parts.extend(lazy_in)
            for _, (vec, _dt, _sh, rows) in lazy_out:
                parts.append(vec)
                if rows is not None:
                    parts.append(rows)
            parts.extend(v.reshape(1) for v in rec.extra.values() if isinstance(v, torch.Tensor))
        values = read_back(parts)
        pos = 0
        for rec, lazy_in, lazy_out in pending:
            if lazy_in or lazy_out:
                pos = self._decode(rec, lazy_in, lazy_out, values, pos)
            for key, v in rec.extra.items():
                if isinstance(v, torch.Tensor):
                    rec.extra[key] = values[pos]
                    pos += 1
            self._process(rec)

    def _decode(self, rec: CallRecord, lazy_in: list[torch.Tensor], lazy_out: list[tuple[str, Any]],
                values: list[float], pos: int) -> int:
        kinds = set(rec.in_kinds)
        inf = self._in_inf.get(rec.index, 0.0)
        for _ in lazy_in:
            if values[pos]:
                kinds.add("nan")
            if values[pos + 1]:
                kinds.add("inf")
                inf = max(inf, values[pos + 1])
            pos += 2
        if inf:
            self._in_inf[rec.index] = inf
        rec.in_kinds = frozenset(kinds)
        rec.inputs_finite = not kinds
        rows = set(rec.samples)
        for path, (vec, dtype, shape, row_vec) in lazy_out:
            n = vec.numel()
            rec.outputs[path] = stats_from_vector(values[pos:pos + n], dtype, shape)
            pos += n
            if row_vec is not None:
                m = row_vec.numel()
                rows.update(i for i, v in enumerate(values[pos:pos + m]) if v)
                pos += m
        rec.samples = sorted(rows)
        return pos



def read_back(parts: list[torch.Tensor]) -> list[float]:
    if not parts:
        return []
    by_device: dict[torch.device, list[int]] = {}
    for i, p in enumerate(parts):
        by_device.setdefault(p.device, []).append(i)
    flat: list[list[float]] = [[] for _ in parts]
    for idx in by_device.values():
        joined = torch.cat([parts[i].reshape(-1).to(torch.float64) for i in idx]).tolist()
        pos = 0
        for i in idx:
            n = parts[i].numel()
            flat[i] = joined[pos:pos + n]
            pos += n
    return [v for chunk in flat for v in chunk]
