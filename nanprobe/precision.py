"""Precision headroom: can this model run in float16 or bfloat16, layer by layer, before a run is wasted on it?

:func:`precision_report` runs the batches in the model's own dtype with two global module hooks (no per-module
hook: fast paths stay as they are) and records, for every module call, its outputs' |max| against the target
dtype's max and the share of their nonzero values that the target dtype would flush to zero. A layer whose
|max| exceeds the target's max is predicted to overflow; its inputs are kept, and the prediction is confirmed by
running that layer alone, on those inputs, under ``torch.autocast`` to the target dtype (or, when autocast does
not change what the layer computes, as a cast copy of it). Layers are judged one by one so that a layer that
only receives an earlier layer's infinity is not counted.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nanprobe._hooks import remove_handle
from nanprobe.batches import ModelCall, cast_floating
from nanprobe.errors import InputError
from nanprobe.execution import Executor, Mode, parse_mode
from nanprobe.report import Record, display_name
from nanprobe.sentinel import tensor_leaves

__all__ = ["DTYPES", "LayerHeadroom", "PrecisionReport", "parse_dtype", "precision_report"]

DTYPES = {"fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
_KEEP_INPUTS = 64  # layers predicted to overflow whose inputs are kept for the confirmation


def parse_dtype(value: str | torch.dtype) -> torch.dtype:
    """``fp16``/``bf16`` (or their long names, or the torch dtype) to a torch dtype; else an InputError."""
    if isinstance(value, torch.dtype) and value in DTYPES.values():
        return value
    found = DTYPES.get(str(value).lower().removeprefix("torch."))
    if found is None:
        raise InputError(f"--dtype must be fp16 or bf16, not {value!r}")
    return found


@dataclass(eq=False)
class LayerHeadroom(Record):
    """One module's outputs against the target dtype."""

    module: str
    module_type: str
    absmax: float | None  # largest finite |value| of its outputs over all calls
    limit: float  # the target dtype's max
    flush_share: float  # share of nonzero output values below the target's smallest subnormal
    calls: int = 1
    nonfinite_calls: int = 0  # calls whose outputs were already NaN/Inf in the source dtype
    predicted: bool = False  # |max| above the target's max: overflows in the target dtype
    confirmed: bool | None = None  # run alone in the target dtype: non-finite output (None: not run)
    how: str | None = None  # "autocast" or "cast" (how it was confirmed)

    @property
    def headroom(self) -> float | None:
        """How many times the target's max is above the layer's |max| (below 1: it overflows)."""
        return self.limit / self.absmax if self.absmax else None


@dataclass(eq=False)
class PrecisionReport(Record):
    """Every module's headroom in the target dtype, the layers predicted to overflow, and whether running
    them in that dtype confirmed it."""

    dtype: str
    source_dtype: str
    layers: list[LayerHeadroom] = field(default_factory=list)
    whole_model: str | None = None  # the whole model under autocast: "finite" / "nan" / "inf" / "not run"

    @property
    def predicted(self) -> list[str]:
        return [layer.module for layer in self.layers if layer.predicted]

    @property
    def confirmed(self) -> list[str]:
        return [layer.module for layer in self.layers if layer.confirmed]

    @property
    def overflows(self) -> bool:
        return bool(self.predicted or self.confirmed)

    @property
    def agrees(self) -> bool:
        """The confirmation found exactly the predicted layers."""
        return self.predicted == self.confirmed

    def to_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame([{**layer.to_dict(), "headroom": layer.headroom} for layer in self.layers])


class _Recorder:
    """Global hooks that summarise every module call's outputs (and keep the inputs of overflowing ones)."""

    def __init__(self, model: nn.Module, target: torch.dtype) -> None:
        self.names = {id(m): name for name, m in model.named_modules()}
        self.limit = float(torch.finfo(target).max)
        self.tiny = float(torch.finfo(target).smallest_normal) * torch.finfo(target).eps / 2  # rounds to 0
        self.stats: dict[str, list[float]] = {}  # name -> [absmax, flushed, nonzero, calls, non-finite calls]
        self.types: dict[str, str] = {}
        self.inputs: dict[str, tuple[nn.Module, tuple[Any, ...], dict[str, Any]]] = {}
        self._stack: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        register = torch.nn.modules.module
        handles = [register.register_module_forward_pre_hook(self._pre),
                   register.register_module_forward_hook(self._post, with_kwargs=True, always_call=True)]
        try:
            yield
        finally:
            for h in handles:
                remove_handle(h)

    def _pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self._stack.append((args, {}))

    def _post(self, module: nn.Module, args: tuple[Any, ...], *rest: Any) -> None:
        kwargs, output = rest if len(rest) == 2 else ({}, rest[0])
        if self._stack:
            self._stack.pop()
        name = self.names.get(id(module), f"<{type(module).__name__}>")
        floats = [t.detach() for _, t in tensor_leaves(output) if t.is_floating_point() and t.numel()]
        if not floats:
            return
        with torch.no_grad():
            parts = []
            for t in floats:
                lo, hi = torch.aminmax(t.reshape(-1))
                a = t.abs()
                parts += [torch.maximum(lo.abs(), hi.abs()).float(),
                          ((a > 0) & (a < self.tiny)).sum().float(), (a > 0).sum().float()]
            values = torch.stack(parts).tolist()
        entry = self.stats.setdefault(name, [0.0, 0.0, 0.0, 0.0, 0.0])
        self.types[name] = type(module).__name__
        bad = False
        for i in range(0, len(values), 3):
            absmax, flushed, nonzero = values[i:i + 3]
            if absmax == absmax and absmax != float("inf"):
                entry[0] = max(entry[0], absmax)
            else:
                bad = True
            entry[1] += flushed
            entry[2] += nonzero
        entry[3] += 1
        entry[4] += bad
        if entry[0] > self.limit and name not in self.inputs and len(self.inputs) < _KEEP_INPUTS:
            memo: dict[int, torch.Tensor] = {}
            self.inputs[name] = (module, _cloned(args, memo), _cloned(kwargs or {}, memo))


def _cloned(obj: Any, memo: dict[int, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        if id(obj) not in memo:
            memo[id(obj)] = obj.detach().clone()
        return memo[id(obj)]
    if isinstance(obj, (tuple, list)):
        return type(obj)(_cloned(v, memo) for v in obj)
    if isinstance(obj, dict):
        return {k: _cloned(v, memo) for k, v in obj.items()}
    return obj


def _device_type(model: nn.Module) -> str:
    return next((p.device.type for p in model.parameters()), "cpu")


def _confirm(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], target: torch.dtype,
             device: str, runner: Executor) -> tuple[bool, str]:
    """(non-finite in the target dtype, how): autocast when it changes the layer's output dtype, else a cast
    copy of the layer on cast inputs."""
    batch = ModelCall(tuple(args), dict(kwargs))
    seen: list[torch.dtype] = []

    def autocast() -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(device_type=device, dtype=target)

    res = runner.run(batch, model=module, contexts=(autocast,), keep_output=True, label="confirm (autocast)")
    if res.error is None:
        seen = [t.dtype for _, t in tensor_leaves(res.value) if t.is_floating_point()]
    if res.error is None and target in seen:
        return res.nonfinite, "autocast"
    try:
        cast = copy.deepcopy(module).to(target)
    except Exception:  # a layer that cannot be copied: autocast's answer is the only one
        return res.nonfinite, "autocast"
    res = runner.run(cast_floating(batch, target), model=cast, label="confirm (cast)")
    return res.nonfinite, "cast"


def precision_report(model: nn.Module, batches: Sequence[Any], *, dtype: str | torch.dtype = "fp16",
                     mode: str | Mode = Mode.EVAL, confirm: bool = True) -> PrecisionReport:
    """How every module's outputs fit ``dtype`` (fp16 or bf16) on ``batches``, run in the model's own dtype;
    the layers predicted to overflow are confirmed by running them alone in ``dtype`` (see the module doc)."""
    target = parse_dtype(dtype)
    run_mode = parse_mode(mode)
    if isinstance(batches, (str, bytes)) or not isinstance(batches, Sequence) or not batches:
        raise InputError("batches must be a non-empty sequence of batches")
    source = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    recorder = _Recorder(model, target)
    runner = Executor(model, mode=run_mode)
    for i, batch in enumerate(batches):
        res = runner.run(batch, label=f"precision batch {i}", instrument=recorder.active)
        if res.error is not None:
            raise InputError(f"the model raised {type(res.error).__name__} on batch {i}: {res.error}") from res.error
    report = PrecisionReport(dtype=str(target).removeprefix("torch."), source_dtype=str(source).removeprefix("torch."))
    over = {name for name, entry in recorder.stats.items() if entry[0] > recorder.limit}
    for name, (absmax, flushed, nonzero, calls, bad) in recorder.stats.items():
        # a container whose outputs overflow because a layer inside it does is not a second culprit
        inside = any(other != name and (not name or other.startswith(f"{name}.")) for other in over)
        layer = LayerHeadroom(module=name, module_type=recorder.types[name], absmax=absmax or None,
                              limit=recorder.limit, flush_share=flushed / nonzero if nonzero else 0.0,
                              calls=int(calls), nonfinite_calls=int(bad), predicted=name in over and not inside)
        report.layers.append(layer)
    if not confirm:
        return report
    device = _device_type(model)
    for layer in report.layers:
        if layer.predicted and layer.module in recorder.inputs:
            module, args, kwargs = recorder.inputs[layer.module]
            layer.confirmed, layer.how = _confirm(module, args, kwargs, target, device, runner)
    report.whole_model = _whole(model, batches[0], target, device, runner)
    return report


def _whole(model: nn.Module, batch: Any, target: torch.dtype, device: str, runner: Executor) -> str:
    res = runner.run(batch, contexts=(lambda: torch.autocast(device_type=device, dtype=target),),
                     label="whole model under autocast")
    if res.error is not None:
        return f"raised {type(res.error).__name__}"
    return res.output.kind or "finite"


def describe(report: PrecisionReport) -> str:
    """One line for people."""
    if not report.overflows:
        return f"fits {report.dtype}: no layer's outputs exceed its max ({report.layers[0].limit:.6g})" \
            if report.layers else f"nothing was recorded for {report.dtype}"
    names = ", ".join(display_name(n) for n in report.predicted) or "none predicted"
    return (f"{len(report.predicted)} layer(s) overflow {report.dtype}: {names}; confirmed by running them in "
            f"{report.dtype}: {', '.join(display_name(n) for n in report.confirmed) or 'none'}")

