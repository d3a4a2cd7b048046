"""Summary statistics of one tensor: counts of NaN / +Inf / -Inf / zeros, and min/max/absmax/mean/std of
the finite values.

Two paths compute the same numbers:

* :func:`stats_vector` builds a small float64 vector on the tensor's own device with no host sync, so a
  caller (the probe) can stack many of them and read them back at once (:func:`stats_from_vector`).
* :func:`tensor_stats` summarises one tensor with a single read-back. On the CPU (where a read-back is not
  a device sync) it first tries a short path: a finite ``sum`` says every value is finite, and then an
  integer view's ``aminmax`` (max, -0.0, and the min when no value is negative), a float ``amin`` (when
  some is), a ``dot`` and the integer view's ``count_nonzero`` (non-zeros) finish the job.

Integer and bool tensors get counts only (float statistics are ``None``); complex tensors are summarised
by their magnitudes (a complex NaN/Inf shows up as a NaN/+Inf magnitude); fp16/bf16 accumulate in
float32 (short path) or float64 (vector path).
"""

from __future__ import annotations

import dataclasses
import math
import struct
import threading
from collections.abc import Sequence
from typing import Any

import torch

from nanprobe.kinds import FINITE, NAN, NEGINF, POSINF, Kind

__all__ = [
    "VECTOR_LEN",
    "TensorStats",
    "dense",
    "dtype_name",
    "finite_minmax",
    "release_scratch",
    "stats_from_vector",
    "stats_vector",
    "tensor_stats",
]

# Layout of a stats vector: numel, nan, posinf, neginf, zeros, finite count, min, max, mean, std.
VECTOR_LEN = 10


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"``."""
    return str(dtype).removeprefix("torch.")


@dataclasses.dataclass(frozen=True)
class TensorStats:
    """What one tensor looked like. Float statistics cover the finite values only; they are ``None``
    for integer/bool tensors and when no value is finite."""

    dtype: str
    shape: tuple[int, ...]
    numel: int
    nan: int = 0
    posinf: int = 0
    neginf: int = 0
    zeros: int = 0
    min: float | None = None
    max: float | None = None
    absmax: float | None = None
    mean: float | None = None
    std: float | None = None

    @property
    def nonfinite(self) -> int:
        """Number of NaN, +Inf and -Inf values."""
        return self.nan + self.posinf + self.neginf

    @property
    def kind(self) -> str | None:
        """``"nan"`` if any NaN, else ``"inf"`` if any Inf, else ``None``."""
        if self.nan:
            return "nan"
        if self.posinf or self.neginf:
            return "inf"
        return None

    @property
    def kinds(self) -> Kind:
        """Every kind of non-finite value present."""
        found = FINITE
        if self.nan:
            found |= NAN
        if self.posinf:
            found |= POSINF
        if self.neginf:
            found |= NEGINF
        return Kind(found)

    @property
    def inf_fraction(self) -> float:
        """The share of values that are +Inf or -Inf."""
        return (self.posinf + self.neginf) / self.numel if self.numel else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (shape as a list)."""
        out = dataclasses.asdict(self)
        out["shape"] = list(self.shape)
        return out


def _is_counted_only(dtype: torch.dtype) -> bool:
    return not (dtype.is_floating_point or dtype.is_complex)


def dense(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor with the same values: a nested tensor's components flattened and joined."""
    if t.is_nested:
        parts = [c.reshape(-1) for c in t.detach().unbind()]
        return torch.cat(parts) if parts else torch.empty(0, dtype=t.dtype, device=t.device)
    return t


def _magnitudes(t: torch.Tensor) -> torch.Tensor:
    t = dense(t.detach())
    return t.abs() if t.is_complex() else t


def stats_vector(t: torch.Tensor) -> torch.Tensor:
    """Statistics of ``t`` as a float64 vector of :data:`VECTOR_LEN` values on ``t``'s device.

    No host sync: the caller reads it back (possibly stacked with others) and decodes it with
    :func:`stats_from_vector`.
    """
    x = _magnitudes(t)
    n = x.numel()
    if _is_counted_only(x.dtype) or n == 0:
        # built with fills and device-side copies only: no host-to-device transfer, so no sync
        vec = torch.full((VECTOR_LEN,), math.nan, dtype=torch.float64, device=x.device)
        vec[:5] = 0.0
        vec[0] = float(n)
        if n:
            vec[4] = n - torch.count_nonzero(x)
        vec[5] = float(n) if _is_counted_only(x.dtype) else 0.0
        return vec
    big = torch.finfo(x.dtype).max
    fin = torch.isfinite(x)
    n_fin = fin.sum(dtype=torch.float64)
    n_nan = torch.isnan(x).sum(dtype=torch.float64)
    n_pos = (x == math.inf).sum(dtype=torch.float64)
    n_neg = n - n_fin - n_nan - n_pos
    zeros = n - torch.count_nonzero(x).to(torch.float64)
    lo = torch.where(fin, x, big).amin().to(torch.float64)
    hi = torch.where(fin, x, -big).amax().to(torch.float64)
    xf = torch.where(fin, x.to(torch.float64), 0.0)
    denom = n_fin.clamp(min=1.0)
    mean = xf.sum() / denom
    dev = torch.where(fin, xf - mean, 0.0)
    std = ((dev * dev).sum() / denom).sqrt()
    n_t = torch.full((), float(n), dtype=torch.float64, device=x.device)
    return torch.stack([n_t, n_nan, n_pos, n_neg, zeros, n_fin, lo, hi, mean, std])


def stats_from_vector(vec: Sequence[float], dtype: torch.dtype | str, shape: Sequence[int]) -> TensorStats:
    """Decode a vector made by :func:`stats_vector` (already read back to the host)."""
    numel, nan, pos, neg, zeros, n_fin, lo, hi, mean, std = (float(v) for v in vec[:VECTOR_LEN])
    name = dtype if isinstance(dtype, str) else dtype_name(dtype)
    counts = {"numel": int(numel), "nan": int(nan), "posinf": int(pos), "neginf": int(neg), "zeros": int(zeros)}
    if n_fin < 1 or math.isnan(lo):
        return TensorStats(dtype=name, shape=tuple(int(s) for s in shape), **counts)
    return TensorStats(dtype=name, shape=tuple(int(s) for s in shape), **counts, min=lo, max=hi,
                       absmax=max(abs(lo), abs(hi)), mean=mean, std=std)


def finite_minmax(x: torch.Tensor) -> tuple[float, float] | None:
    """``(min, max)`` of a floating CPU tensor if every value is finite, else ``None`` (one pass)."""
    lo, hi = x.amin().item(), x.amax().item()  # two vectorised passes beat one aminmax on the CPU
    if math.isfinite(lo) and math.isfinite(hi):
        return lo, hi
    return None


_local = threading.local()


def _scratch(n: int, dtype: torch.dtype) -> torch.Tensor:
    """A per-thread CPU buffer of at least ``n`` elements (grown, never shrunk below the largest seen; the
    probe frees them when it detaches, see :func:`release_scratch`)."""
    try:
        bufs: dict[torch.dtype, torch.Tensor] = _local.bufs
    except AttributeError:
        bufs = _local.bufs = {}
    buf = bufs.get(dtype)
    if buf is None or buf.numel() < n:
        buf = bufs[dtype] = torch.empty(n, dtype=dtype)
    return buf[:n]


def release_scratch() -> None:
    """Drop this thread's scratch buffers."""
    _local.__dict__.pop("bufs", None)


def _moments(flat: torch.Tensor, total: float | None = None) -> tuple[float, float] | None:
    """Mean and population variance of a 1-D all-finite float32/float64 tensor, or ``None`` on overflow.

    One ``sum`` (skipped when ``total`` is given) and one ``dot`` (fast, vectorised reductions); when the
    variance is small next to the squared mean (cancellation) a second pass around the mean takes over.
    """
    n = flat.numel()
    mean = (flat.sum().item() if total is None else total) / n
    sq = torch.dot(flat, flat).item() / n
    if not (math.isfinite(mean) and math.isfinite(sq)):
        return None
    var = sq - mean * mean
    if var <= 1e-2 * sq:
        dev = flat - mean
        var = torch.dot(dev, dev).item() / n
        if not math.isfinite(var):
            return None
    return mean, max(var, 0.0)


def _nonzero(flat: torch.Tensor, negative_zero: bool | None = None) -> int:
    """Number of non-zero values of a 1-D all-finite float32/float64 tensor.

    Read-only first: viewed as same-sized integers, +0.0 is the only zero, so ``count_nonzero`` of the view
    is exact unless a -0.0 (the integer minimum) is present (``negative_zero``; found with ``amin`` when not
    given). Then the values are converted into a reused bool buffer (one byte each) whose bytes are summed.
    """
    ints = flat.view(_INT_VIEW[flat.dtype])
    if negative_zero is None:
        negative_zero = ints.amin().item() == torch.iinfo(ints.dtype).min
    if not negative_zero:
        return int(torch.count_nonzero(ints))
    flags = _scratch(flat.numel(), torch.bool).copy_(flat)
    if flags.numel() < 2**31:  # summing the bytes in int32 is faster than count_nonzero
        return int(flags.view(torch.uint8).sum(dtype=torch.int32))
    return int(torch.count_nonzero(flags))


_INT_VIEW = {torch.float32: torch.int32, torch.float64: torch.int64}
_PACK = {torch.float32: (struct.Struct("<i"), struct.Struct("<f")),
         torch.float64: (struct.Struct("<q"), struct.Struct("<d"))}


def _bits_to_float(bits: int, dtype: torch.dtype) -> float:
    as_int, as_float = _PACK[dtype]
    return float(as_float.unpack(as_int.pack(bits))[0])


def _short_path(x: torch.Tensor, lo: float, hi: float, dtype: torch.dtype | None = None,
                total: float | None = None, negative_zero: bool | None = None) -> TensorStats:
    """Statistics of an all-finite floating CPU tensor whose min/max (and maybe sum) are known (``dtype``:
    the name to report, e.g. the complex dtype whose magnitudes ``x`` holds): a dot for the moments and a
    count of the non-zeros (skipped when zero is outside [min, max])."""
    wide = x if x.dtype in (torch.float32, torch.float64) else x.float()
    flat = wide.reshape(-1)
    n = flat.numel()
    absmax = max(abs(lo), abs(hi))
    moments = _moments(flat, total)
    if moments is None or (moments[1] == 0.0 and lo != hi):
        # squares overflow (or underflow to zero for tiny values): summarise the values scaled into [-1, 1]
        scaled = _moments(flat / absmax)
        assert scaled is not None
        mean, std = scaled[0] * absmax, math.sqrt(scaled[1]) * absmax
    else:
        mean, std = moments[0], math.sqrt(moments[1])
    nonzero = n if (lo > 0 or hi < 0) else _nonzero(flat, negative_zero)
    return TensorStats(dtype=dtype_name(dtype or x.dtype), shape=tuple(x.shape), numel=n, zeros=n - nonzero,
                       min=lo, max=hi, absmax=absmax, mean=mean, std=std)


def _cpu_finite(x: torch.Tensor, dtype: torch.dtype) -> TensorStats | None:
    """Statistics of a non-empty floating CPU tensor when all its values are finite, else ``None``.

    The sum comes first: it is the cheapest pass, a NaN or an Inf anywhere makes it non-finite, and it is
    the mean's numerator. Then one ``aminmax`` of the values viewed as same-sized integers (faster than float
    ``amin``/``amax``, which handle NaN): non-negative floats order like their bits, so the largest integer
    is the largest value when any is >= 0; negative floats are the negative integers, the smallest of them
    the negative value nearest zero (the integer minimum itself is -0.0). The smallest value takes a float
    ``amin`` only when some value is negative.
    """
    wide = x if x.dtype in (torch.float32, torch.float64) else x.float()
    flat = wide.reshape(-1)
    total = flat.sum().item()
    if not math.isfinite(total):
        return None  # NaN/Inf present (or a sum that overflows): the exact path counts them
    kind = flat.dtype
    low_bits, high_bits = (int(v) for v in torch.aminmax(flat.view(_INT_VIEW[kind])))
    hi = _bits_to_float(high_bits if high_bits >= 0 else low_bits, kind)
    lo = _bits_to_float(low_bits, kind) if low_bits >= 0 else flat.amin().item()
    negative_zero = low_bits == torch.iinfo(_INT_VIEW[kind]).min
    return _short_path(wide, lo, hi, dtype=dtype, total=total, negative_zero=negative_zero)


def tensor_stats(t: torch.Tensor) -> TensorStats:
    """Statistics of one tensor, read back once."""
    x = _magnitudes(t)
    if x.device.type == "cpu" and x.numel() and not _is_counted_only(x.dtype):
        s = _cpu_finite(x, t.dtype)
        if s is not None:
            return s
        nan = int(torch.isnan(x).sum())
        if nan == x.numel():  # NaN everywhere (what flows after a failure): nothing finite to summarise
            return TensorStats(dtype=dtype_name(t.dtype), shape=tuple(x.shape), numel=nan, nan=nan)
    if x.device.type == "cpu" and _is_counted_only(x.dtype):
        n = x.numel()
        return TensorStats(dtype=dtype_name(x.dtype), shape=tuple(x.shape), numel=n,
                           zeros=n - int(torch.count_nonzero(x)) if n else 0)
    return stats_from_vector(stats_vector(x).tolist(), t.dtype, x.shape)


