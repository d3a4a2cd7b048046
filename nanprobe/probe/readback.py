"""Off-CPU statistics: device-side vectors queued and read back in batches, one host sync per flush."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nanprobe.kinds import FINITE, INF, NAN, Kind
from nanprobe.probe.records import CallRecord, batch_dim
from nanprobe.stats import stats_from_vector, stats_vector

__all__ = ["LazyStats", "ReadBackQueue", "input_flags", "lazy_stats", "read_back"]


@dataclass
class LazyStats:
    """A tensor's statistics still on its device: the stats vector and the per-sample non-finite flags."""

    vector: torch.Tensor
    dtype: torch.dtype
    shape: tuple[int, ...]
    rows: torch.Tensor | None


def lazy_stats(x: torch.Tensor, batch: int | None) -> LazyStats:
    """Statistics of ``x`` without a host sync (decoded later by :meth:`ReadBackQueue.flush`)."""
    vec = stats_vector(x)
    dim = batch_dim(x, batch) if batch is not None and x.numel() else None
    rows = None
    if dim is not None and batch is not None:
        y = x.abs() if x.is_complex() else x
        bad = ~torch.isfinite(y) if y.dtype.is_floating_point else torch.zeros_like(y, dtype=torch.bool)
        rows = bad.movedim(dim, 0).reshape(batch, -1).any(dim=1).to(torch.float64)
    return LazyStats(vec, x.dtype, tuple(x.shape), rows)


def input_flags(x: torch.Tensor) -> torch.Tensor:
    """(any NaN, share of Inf) of an input, on its device."""
    x = x.detach().abs() if x.is_complex() else x.detach()
    return torch.stack([x.isnan().any().to(torch.float64), x.isinf().sum(dtype=torch.float64) / x.numel()])


class ReadBackQueue:
    """Records whose statistics (input flags, output stats vectors, sample-row flags, device-side extras)
    are still on the device. :meth:`flush` reads everything back with one ``cat`` + ``tolist`` per device
    and returns the records, decoded, in the order they were queued."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: list[tuple[CallRecord, list[torch.Tensor], list[tuple[str, LazyStats]]]] = []

    def __len__(self) -> int:
        return len(self._items)

    def push(self, rec: CallRecord, lazy_in: list[torch.Tensor], lazy_out: list[tuple[str, LazyStats]]) -> bool:
        """Queue a record; True when the queue is full and should be flushed."""
        self._items.append((rec, lazy_in, lazy_out))
        return len(self._items) >= self.limit

    def flush(self) -> list[tuple[CallRecord, float]]:
        """The queued records, decoded, each with the largest share of Inf among its inputs."""
        items, self._items = self._items, []
        parts: list[torch.Tensor] = []
        for rec, lazy_in, lazy_out in items:
            parts.extend(lazy_in)
            for _, lazy in lazy_out:
                parts.append(lazy.vector)
                if lazy.rows is not None:
                    parts.append(lazy.rows)
            parts.extend(v.reshape(1) for v in rec.extra.values() if isinstance(v, torch.Tensor))
        values = read_back(parts)
        pos = 0
        out: list[tuple[CallRecord, float]] = []
        for rec, lazy_in, lazy_out in items:
            inf = 0.0
            if lazy_in or lazy_out:
                pos, inf = _decode(rec, lazy_in, lazy_out, values, pos)
            for key, v in rec.extra.items():
                if isinstance(v, torch.Tensor):
                    rec.extra[key] = values[pos]
                    pos += 1
            out.append((rec, inf))
        return out


def _decode(rec: CallRecord, lazy_in: list[torch.Tensor], lazy_out: list[tuple[str, LazyStats]],
            values: list[float], pos: int) -> tuple[int, float]:
    kinds = rec.in_kinds
    inf = 0.0
    for _ in lazy_in:
        if values[pos]:
            kinds |= NAN
        if values[pos + 1]:
            kinds |= INF
            inf = max(inf, values[pos + 1])
        pos += 2
    rec.in_kinds = Kind(kinds)
    rec.inputs_finite = rec.in_kinds == FINITE
    rows = set(rec.samples)
    for path, lazy in lazy_out:
        n = lazy.vector.numel()
        rec.outputs[path] = stats_from_vector(values[pos:pos + n], lazy.dtype, lazy.shape)
        pos += n
        if lazy.rows is not None:
            m = lazy.rows.numel()
            rows.update(i for i, v in enumerate(values[pos:pos + m]) if v)
            pos += m
    rec.samples = sorted(rows)
    return pos, inf


def read_back(parts: list[torch.Tensor]) -> list[float]:
    """All values of ``parts`` as floats, with one read per device."""
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

