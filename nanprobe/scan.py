"""Scan a checkpoint's tensors without running the model: non-finite and extreme values in parameters,
buffers, optimizer state and a GradScaler, ranked by how likely each is the culprit of a NaN."""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from nanprobe.checkpoint_files import OPTIMIZER_KEYS, STATE_DICT_KEYS, is_optimizer_state
from nanprobe.report import to_plain

__all__ = ["Finding", "Outlier", "ScanResult", "peer_outliers", "scan_checkpoint"]

_SCALER_KEYS = ("scaler", "grad_scaler", "scaler_state_dict", "amp_scaler")
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
_FP16_MAX = 65504.0
_EXTREME = 1e4  # |value| above this in a parameter is unusual, and overflows fp16 once multiplied a little
_TINY_SCALE = 1e-3  # a GradScaler scale this small means overflow after overflow
_PEER_RATIO = 100.0  # |max| this many times its peers' median: the tensor stands out
_LONE_RATIO = 1e4  # without peers (a unique name), against every parameter of the same rank
_OUTLIER_FLOOR = 10.0  # a weight whose |max| is below this does not make activations explode


@dataclass
class Finding:
    """One suspicious tensor (or scalar) and why it is suspicious."""

    location: str  # "parameter" | "buffer" | "optimizer" | "scaler" | "other"
    name: str  # path inside the checkpoint, e.g. "model_state_dict/fc.weight" or "optimizer/state/0/exp_avg_sq"
    score: float  # 0..1: how likely this is the culprit
    reason: str
    nonfinite: bool
    dtype: str = ""
    shape: list[int] = field(default_factory=list)
    numel: int = 0
    nan: int = 0
    inf: int = 0
    negative: int = 0
    min: float | None = None
    max: float | None = None
    absmax: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return to_plain(asdict(self))  # a non-finite min/max becomes "nan" / "inf" / "-inf"


@dataclass
class ScanResult:
    """Every finding, most likely culprit first, plus how much was looked at."""

    findings: list[Finding]
    tensors_scanned: int
    groups: dict[str, int]  # location -> number of tensors scanned there

    @property
    def nonfinite(self) -> bool:
        return any(f.nonfinite for f in self.findings)

    def top(self, n: int | None) -> list[Finding]:
        return self.findings if n is None else self.findings[:n]

    def to_dict(self) -> dict[str, Any]:
        return {"status": "nonfinite" if self.nonfinite else "clean", "tensors_scanned": self.tensors_scanned,
                "groups": dict(self.groups), "findings": [f.to_dict() for f in self.findings]}

    def to_frame(self) -> Any:
        import pandas as pd

        columns = list(Finding.__dataclass_fields__)
        return pd.DataFrame([asdict(f) for f in self.findings], columns=columns)


# ----------------------------------------------------------------------------------------------- statistics

@dataclass
class _Stats:
    numel: int
    nan: int
    inf: int
    negative: int
    min: float | None
    max: float | None
    absmax: float | None


def _stats(t: torch.Tensor) -> _Stats | None:
    if not (t.is_floating_point() or t.is_complex()) or t.numel() == 0:
        return None
    x = t.detach()
    if x.is_complex():
        x = torch.view_as_real(x)
    x = x.float()
    nan = int(torch.isnan(x).sum())
    inf = int(torch.isinf(x).sum())
    finite = x[torch.isfinite(x)]
    if finite.numel():
        lo, hi = float(finite.min()), float(finite.max())
        absmax: float | None = float(finite.abs().max())
    else:
        lo = hi = absmax = None
    if inf:
        absmax = math.inf
        hi = math.inf if bool((x == math.inf).any()) else hi
        lo = -math.inf if bool((x == -math.inf).any()) else lo
    return _Stats(numel=x.numel(), nan=nan, inf=inf, negative=int((x < 0).sum()), min=lo, max=hi, absmax=absmax)


def _finding(location: str, name: str, t: torch.Tensor, st: _Stats, score: float, reason: str) -> Finding:
    return Finding(location=location, name=name, score=round(score, 3), reason=reason,
                   nonfinite=bool(st.nan or st.inf), dtype=str(t.dtype).replace("torch.", ""), shape=list(t.shape),
                   numel=st.numel, nan=st.nan, inf=st.inf, negative=st.negative, min=st.min, max=st.max,
                   absmax=st.absmax)


def _bad_part(st: _Stats) -> str:
    parts = [f"{st.nan}/{st.numel} NaN" if st.nan else "", f"{st.inf}/{st.numel} Inf" if st.inf else ""]
    return " and ".join(p for p in parts if p)


def _share(st: _Stats) -> float:
    return (st.nan + st.inf) / max(st.numel, 1)


# ------------------------------------------------------------------------------------------------- judging

def _judge_weight(location: str, name: str, t: torch.Tensor, st: _Stats) -> Finding | None:
    leaf = name.rsplit(".", 1)[-1].rsplit("/", 1)[-1]
    if st.nan or st.inf:
        base = 0.95 if location == "parameter" else 0.9
        if location == "parameter":
            consequence = "every forward pass that uses it is non-finite"
        elif leaf in ("running_mean", "running_var"):
            consequence = ("a buffer: every eval-mode forward through this BatchNorm is non-finite (train mode "
                           "normalizes with the batch's statistics and only updates it)")
        else:
            consequence = "a buffer: every forward pass that reads it is non-finite"
        return _finding(location, name, t, st, base + 0.04 * _share(st), f"{_bad_part(st)}: {consequence}")
    if leaf == "running_var" and st.negative:
        return _finding(location, name, t, st, 0.85, f"{st.negative} negative running variance(s): "
                        "eval-mode BatchNorm takes sqrt(var + eps) of them -> NaN")
    if leaf == "running_var" and st.absmax is not None and st.absmax > _EXTREME:
        return _finding(location, name, t, st, 0.35, f"running variance up to {st.absmax:.3g}: the batch "
                        "statistics blew up during training")
    if st.absmax is not None and st.absmax > _FP16_MAX:
        return _finding(location, name, t, st, 0.5, f"|value| up to {st.absmax:.3g} exceeds the fp16 range "
                        f"({_FP16_MAX:.0f}): overflows under autocast/half")
    finfo_max = torch.finfo(t.dtype).max if t.is_floating_point() else None
    if st.absmax is not None and finfo_max is not None and st.absmax > 0.5 * finfo_max:
        return _finding(location, name, t, st, 0.6, f"|value| up to {st.absmax:.3g}, near the {t.dtype} "
                        "maximum: the next multiply overflows")
    if st.absmax is not None and st.absmax > _EXTREME:
        return _finding(location, name, t, st, 0.25, f"|value| up to {st.absmax:.3g}: unusually large weight "
                        "(diverging training?)")
    return None


def _judge_optimizer(name: str, t: torch.Tensor, st: _Stats) -> Finding | None:
    leaf = name.rsplit("/", 1)[-1]
    if st.nan or st.inf:
        score = {"exp_avg_sq": 0.8, "exp_avg": 0.75, "momentum_buffer": 0.75}.get(leaf, 0.6)
        if leaf == "step":
            return _finding("optimizer", name, t, st, 0.6, "non-finite step count: bias correction divides by it")
        return _finding("optimizer", name, t, st, score + 0.04 * _share(st),
                        f"{_bad_part(st)} in optimizer state: the next step writes NaN into the weights")
    if leaf in ("exp_avg_sq", "max_exp_avg_sq", "square_avg", "sum") and st.negative:
        return _finding("optimizer", name, t, st, 0.7, f"{st.negative} negative second moment(s): "
                        "Adam-style updates take their sqrt -> NaN")
    if leaf == "exp_avg_sq" and st.absmax is not None and st.absmax > _EXTREME**2:
        return _finding("optimizer", name, t, st, 0.2, f"second moment up to {st.absmax:.3g}: huge gradients "
                        "were seen")
    return None


def _judge_scaler(name: str, scale: float) -> Finding | None:
    st = _Stats(numel=1, nan=int(math.isnan(scale)), inf=int(math.isinf(scale)), negative=int(scale < 0),
                min=scale, max=scale, absmax=abs(scale))
    t = torch.tensor([scale])
    if st.nan or st.inf:
        return _finding("scaler", name, t, st, 0.85, f"GradScaler scale is {scale}: every scaled loss and "
                        "gradient is non-finite")
    if scale <= 0:
        return _finding("scaler", name, t, st, 0.8, f"GradScaler scale is {scale}: gradients vanish or flip")
    if scale < _TINY_SCALE:
        return _finding("scaler", name, t, st, 0.4, f"GradScaler scale fell to {scale:.3g}: overflow after "
                        "overflow (the loss or gradients are non-finite at every step)")
    return None


# ---------------------------------------------------------------------------------------------------- walk

class _Walker:
    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self.groups: dict[str, int] = {}

    def count(self, location: str) -> None:
        self.groups[location] = self.groups.get(location, 0) + 1

    def add(self, finding: Finding | None) -> None:
        if finding is not None:
            self.findings.append(finding)

    def weights(self, state: Mapping[str, Any], prefix: str, buffers: set[str] | None = None) -> None:
        def location_of(key: str) -> str:
            is_buffer = key in buffers if buffers is not None else key.rsplit(".", 1)[-1] in _BUFFER_SUFFIXES
            return "buffer" if is_buffer else "parameter"

        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                continue
            location = location_of(key)
            self.count(location)
            st = _stats(value)
            if st is not None:
                self.add(_judge_weight(location, f"{prefix}{key}", value, st))
        tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
        flagged = {f.name for f in self.findings}
        for out in peer_outliers(tensors.items()):
            name = f"{prefix}{out.name}"
            st = _stats(tensors[out.name])
            if name not in flagged and st is not None:
                score = min(0.8, 0.4 + 0.05 * math.log10(out.ratio))
                self.add(_finding(location_of(out.name), name, tensors[out.name], st, score,
                                  f"stands out from its peers: {out.describe()}"))

    def optimizer(self, opt: Mapping[str, Any], prefix: str) -> None:
        names = _param_names(opt)
        for pid, per_param in (opt.get("state") or {}).items():
            if not isinstance(per_param, Mapping):
                continue
            label = names.get(pid, str(pid))
            for key, value in per_param.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    value = torch.tensor(float(value))
                if not isinstance(value, torch.Tensor):
                    continue
                self.count("optimizer")
                st = _stats(value)
                if st is not None:
                    self.add(_judge_optimizer(f"{prefix}state/{label}/{key}", value, st))

    def scaler(self, sc: Mapping[str, Any], prefix: str) -> None:
        scale = sc.get("scale")
        if isinstance(scale, torch.Tensor) and scale.numel() == 1:
            scale = float(scale)
        if isinstance(scale, (int, float)):
            self.count("scaler")
            self.add(_judge_scaler(f"{prefix}scale", float(scale)))

    def other(self, obj: Any, prefix: str, depth: int = 0) -> None:
        if depth > 6:
            return
        if isinstance(obj, torch.Tensor):
            self.count("other")
            st = _stats(obj)
            if st is not None:
                self.add(_judge_weight("other", prefix.rstrip("/") or "<tensor>", obj, st))
        elif isinstance(obj, Mapping):
            self.dispatch(obj, prefix, depth + 1)
        elif isinstance(obj, (list, tuple)):
            for i, value in enumerate(obj):
                self.other(value, f"{prefix}{i}/", depth + 1)

    def dispatch(self, obj: Mapping[str, Any], prefix: str, depth: int = 0) -> None:
        if is_optimizer_state(obj):
            self.optimizer(obj, prefix)
            return
        if _looks_like_scaler(obj):
            self.scaler(obj, prefix)
            return
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            self.weights(obj, prefix)
            return
        for key, value in obj.items():
            self.other(value, f"{prefix}{key}/", depth)


def _looks_like_scaler(obj: Mapping[str, Any]) -> bool:
    return "scale" in obj and ("growth_factor" in obj or "_growth_tracker" in obj or "growth_interval" in obj)


def _param_names(opt: Mapping[str, Any]) -> dict[Any, str]:
    """Recent torch records ``param_names`` in each param group; use them to name optimizer state."""
    names: dict[Any, str] = {}
    for group in opt.get("param_groups") or []:
        if isinstance(group, Mapping) and isinstance(group.get("param_names"), list):
            names.update(zip(group.get("params", []), group["param_names"]))
    return names


@dataclass(frozen=True)
class Outlier:
    """A finite weight whose magnitude stands out from its peers (the same name in the other blocks,
    ``h.*.mlp.c_fc.weight``; or, for a unique name, every weight of the same rank)."""

    name: str
    absmax: float
    peer_median: float
    peers: int
    pattern: str

    @property
    def ratio(self) -> float:
        return self.absmax / self.peer_median if self.peer_median > 0 else math.inf

    def describe(self) -> str:
        return (f"{self.name} |max| {self.absmax:.3g} is {self.ratio:.2g} times its {self.peers} peers' "
                f"({self.pattern}, median |max| {self.peer_median:.3g})")


def _pattern(name: str) -> str:
    """``h.6.mlp.c_fc.weight`` -> ``h.*.mlp.c_fc.weight``: the name shared by the same tensor in every block."""
    return re.sub(r"(?<=\.)\d+(?=\.)|^\d+(?=\.)", "*", name)


def peer_outliers(named: Iterable[tuple[str, torch.Tensor]]) -> list[Outlier]:
    """Finite floating tensors whose |max| is at least 100 times the median of their peers' (the tensors
    with the same name pattern and shape), or, for tensors without peers, 10,000 times the median of every
    tensor of the same rank; never below |max| 10, and a comparison needs two peers with a non-zero median.
    Largest ratio first. One small read-back per tensor."""
    sizes: list[tuple[str, str, tuple[int, ...], float]] = []
    for name, t in named:
        if not t.is_floating_point() or t.numel() == 0 or t.dim() == 0:
            continue
        absmax = float(t.detach().abs().amax())
        if math.isfinite(absmax):
            sizes.append((name, _pattern(name), tuple(t.shape), absmax))
    groups: dict[tuple[str, tuple[int, ...]], list[float]] = {}
    ranks: dict[int, list[float]] = {}
    for _, pattern, shape, absmax in sizes:
        groups.setdefault((pattern, shape), []).append(absmax)
        ranks.setdefault(len(shape), []).append(absmax)
    found: list[Outlier] = []
    for name, pattern, shape, absmax in sizes:
        if absmax < _OUTLIER_FLOOR:
            continue
        peers = list(groups[(pattern, shape)])
        peers.remove(absmax)
        if len(peers) >= 2 and statistics.median(peers) > 0:
            median, ratio, label = statistics.median(peers), _PEER_RATIO, pattern
        else:
            others = list(ranks[len(shape)])
            others.remove(absmax)
            if len(others) < 2 or statistics.median(others) <= 0:
                continue
            peers, median, ratio = others, statistics.median(others), _LONE_RATIO
            label = f"every {len(shape)}-d weight"
        if absmax >= ratio * max(median, 1e-30):
            found.append(Outlier(name, absmax, median, len(peers), label))
    return sorted(found, key=lambda o: -o.ratio)


def scan_checkpoint(obj: Any) -> ScanResult:
    """Scan a loaded checkpoint (dict, bare state dict, ``nn.Module``, or a model's ``state_dict()``)."""
    walker = _Walker()
    if isinstance(obj, nn.Module):
        buffers = {name for name, _ in obj.named_buffers()}
        walker.weights(obj.state_dict(keep_vars=False), "", buffers)
    elif isinstance(obj, Mapping):
        rest = dict(obj)
        for key in STATE_DICT_KEYS:
            value = rest.get(key)
            if isinstance(value, nn.Module):
                walker.weights(value.state_dict(), f"{key}/", {n for n, _ in value.named_buffers()})
                rest.pop(key)
            elif isinstance(value, Mapping) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
                walker.weights(value, f"{key}/")
                rest.pop(key)
        for key in OPTIMIZER_KEYS:
            if isinstance(rest.get(key), Mapping) and is_optimizer_state(rest[key]):
                walker.optimizer(rest.pop(key), f"{key}/")
        for key in _SCALER_KEYS:
            if isinstance(rest.get(key), Mapping):
                walker.scaler(rest.pop(key), f"{key}/")
        if rest and all(isinstance(v, torch.Tensor) for v in rest.values()) and len(rest) == len(obj):
            walker.weights(rest, "")  # a bare state dict
        else:
            walker.dispatch(rest, "")
    else:
        walker.other(obj, "")
    ranked = sorted(walker.findings, key=lambda f: (-f.score, -(f.nan + f.inf), f.name))
    return ScanResult(findings=ranked, tensors_scanned=sum(walker.groups.values()), groups=walker.groups)
