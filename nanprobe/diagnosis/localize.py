"""Op-level localization without per-module hooks: a TorchDispatchMode checks every op's outputs while
global module hooks (which keep fast paths such as ``nn.TransformerEncoderLayer``'s intact) tell which
module is running. Data flow is then walked back from the non-finite model output to its producer."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

from nanprobe._hooks import remove_handle
from nanprobe.diagnosis.flow import OpEvent, storage_key
from nanprobe.diagnosis.masks import fully_masked, is_mask_consumer
from nanprobe.kinds import FINITE, INF, NAN, Kind, sum_kinds, tensor_kinds
from nanprobe.knowledge import OpCall
from nanprobe.report import LayerRow
from nanprobe.sentinel import tensor_leaves
from nanprobe.stats import tensor_stats

__all__ = ["Localizer", "format_source", "user_source"]

_TORCH_DIR = os.path.dirname(torch.__file__)
_OWN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SKIP_PREFIXES = (_TORCH_DIR, _OWN_DIR, "<")
_TRACKED_ATTR = "_nanprobe_module"


def user_source(skip: tuple[str, ...] = _SKIP_PREFIXES) -> str | None:
    """``file:line`` of the innermost Python frame outside torch and nanprobe."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if not name.startswith(skip) and "/contextlib.py" not in name and "/functools.py" not in name:
            return format_source(name, frame.f_lineno)
        frame = frame.f_back  # type: ignore[assignment]
    return None


def format_source(filename: str, line: int) -> str:
    rel = os.path.relpath(filename) if os.path.isabs(filename) else filename
    return f"{rel if not rel.startswith('..') else filename}:{line}"


def _source_from_trace(trace: Any) -> str | None:
    """The innermost user frame of an anomaly-mode forward trace (a list of formatted stack strings)."""
    if not trace:
        return None
    text = "".join(trace) if isinstance(trace, (list, tuple)) else str(trace)
    found: str | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith('File "'):
            continue
        name, _, rest = line[6:].partition('", line ')
        number = rest.split(",", 1)[0]
        if not name.startswith(_SKIP_PREFIXES) and number.isdigit():
            found = format_source(name, int(number))
    return found


def _fold_stats(tensors: list[torch.Tensor]) -> dict[str, Any]:
    """min/max/absmax/mean/std of the finite values and NaN/Inf counts, over all of a call's floating outputs
    (:func:`nanprobe.stats.tensor_stats`: a few vectorised passes, no copy of the values)."""
    out: dict[str, Any] = {"min": None, "max": None, "absmax": None, "mean": None, "std": None, "nan": 0, "inf": 0}
    means: list[float] = []
    stds: list[float] = []
    for t in tensors:
        if t.is_nested or t.numel() == 0 or not (t.is_floating_point() or t.is_complex()):
            continue
        s = tensor_stats(t.detach())
        out["nan"] += s.nan
        out["inf"] += s.posinf + s.neginf
        if s.min is None or s.max is None:
            continue
        out["min"] = s.min if out["min"] is None else min(out["min"], s.min)
        out["max"] = s.max if out["max"] is None else max(out["max"], s.max)
        out["absmax"] = max(abs(out["min"]), abs(out["max"]))
        if s.mean is not None:
            means.append(s.mean)
        if s.std is not None:
            stds.append(s.std)
    if means:
        out["mean"] = sum(means) / len(means)
        out["std"] = max(stds) if stds else None
    return out


class _Mode(TorchDispatchMode):
    def __init__(self, owner: Localizer) -> None:
        super().__init__()
        self.owner = owner

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        before: dict[int, Kind] | None = None
        if not self.owner.suspended and _mutates(func):
            before = {id(t): tensor_kinds(t) for t in _mutable_args(func, args, kwargs)}
        out = func(*args, **kwargs)
        if not self.owner.suspended:
            self.owner.suspended = True
            try:
                self.owner.observe(func, args, kwargs, out, before)
            finally:
                self.owner.suspended = False
        return out


def _allocates_uninitialized(op: str) -> bool:
    """``aten.empty``, ``aten.empty_like``, ``aten.empty_strided``, ``aten.new_empty``...: contents undefined."""
    name = op.removeprefix("aten.")
    return name.startswith(("empty", "new_empty"))


def _mutates(func: Any) -> bool:
    schema = getattr(func, "_schema", None)
    return bool(schema is not None and schema.is_mutable)


def _mutable_args(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    for i, arg in enumerate(func._schema.arguments):
        if arg.alias_info is None or not arg.alias_info.is_write:
            continue
        value = args[i] if i < len(args) else kwargs.get(arg.name)
        found.extend(_flat_tensors(value))
    return found


def _flat_tensors(obj: Any) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    if isinstance(obj, torch.Tensor):
        found.append(obj)
    elif isinstance(obj, (tuple, list)):
        for v in obj:
            found.extend(_flat_tensors(v))
    elif isinstance(obj, dict):
        for v in obj.values():
            found.extend(_flat_tensors(v))
    return found


class Localizer:
    """Context manager: while active, records every op that emits a non-finite value, which module ran it,
    attention ops' fully masked rows, and per-module-call output statistics."""

    def __init__(self, model: nn.Module, batch: Any, batch_size: int | None, *, backward: bool = False) -> None:
        self.model = model
        self.batch_size = batch_size
        self.names = {id(m): name for name, m in model.named_modules()}
        self.param_keys: dict[Any, str] = {}  # filled on entry: a run may give the model private buffers
        self.input_keys = {storage_key(t) for _, t in tensor_leaves(batch) if not t.is_nested}
        self.events: list[OpEvent] = []
        self.rows: list[LayerRow] = []
        self.parents: list[int | None] = []  # the enclosing call of each row
        self.stack: list[LayerRow] = []
        self.attention: list[dict[str, Any]] = []
        self.ops_seen: set[str] = set()
        self.uninitialized: set[Any] = set()  # storages from aten.empty* not yet written to
        self.suspended = False
        self.calls: dict[int, tuple[nn.Module, tuple[Any, ...], dict[str, Any]]] = {}
        """Call index -> (module, args, kwargs) of the calls that ran a producing op (their inputs, cloned), so
        a replay can run that module alone and a repro can be written."""
        self.call_rng: dict[int, torch.Tensor] = {}
        self._live: dict[int, tuple[tuple[Any, ...], torch.Tensor]] = {}  # calls on the stack: args, RNG
        self._producing: set[int] = set()
        self._known: dict[Any, Kind] = {}  # storage -> kinds of the op output last written there
        self._first_producing: int | None = None  # the call that ran the first producing op
        self.call_samples: dict[int, list[int]] = {}
        self.backward = backward
        self._absmax: dict[Any, float | None] = {}  # storage -> |max| of the output last written there
        self.op_calls: dict[int, OpCall] = {}
        """Event index -> the arguments of the first producing ops (forward: as called; backward: the autograd
        node's saved tensors), so the knowledge checks can test their conditions on the real values."""
        self._input_grad_fns: dict[int, set[Any]] = {}

    # ---------------------------------------------------------------- lifecycle
    @contextlib.contextmanager
    def active(self) -> Iterator[Localizer]:
        self.param_keys.clear()
        for name, p in [*self.model.named_parameters(), *self.model.named_buffers()]:
            if p.is_floating_point() and not p.is_nested:
                self.param_keys.setdefault(storage_key(p), name)
        hooks = [
            torch.nn.modules.module.register_module_forward_pre_hook(self._pre),
            torch.nn.modules.module.register_module_forward_hook(self._post, with_kwargs=True, always_call=True),
        ]
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*[Aa]nomaly [Dd]etection.*")
                anomaly = (torch.autograd.set_detect_anomaly(True, check_nan=False) if self.backward
                           else contextlib.nullcontext())
                with anomaly, _Mode(self):
                    yield self
        finally:
            for h in hooks:
                remove_handle(h)
            self.stack.clear()
            self._live.clear()
            self._known.clear()

    # ---------------------------------------------------------------- module tracking
    def _pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        name = self.names.get(id(module))
        if name is None:
            name = f"<{type(module).__name__}>"
        row = LayerRow(index=len(self.rows), module=name, module_type=type(module).__name__)
        row.in_absmax = self._input_absmax(args)
        self._live[row.index] = (args, torch.get_rng_state())
        self.rows.append(row)
        self.parents.append(self.stack[-1].index if self.stack else None)
        self.stack.append(row)
        if self.backward and torch.is_grad_enabled():
            self._input_grad_fns[row.index] = {t.grad_fn for t in _flat_tensors(args) if t.grad_fn is not None}

    def _input_absmax(self, args: tuple[Any, ...]) -> float | None:
        """The largest finite |value| among a call's floating inputs: looked up from the outputs already
        measured (by storage), measured only for inputs no call produced (the batch)."""
        found: float | None = None
        was = self.suspended
        self.suspended = True
        try:
            for t in _flat_tensors(args):
                if not t.is_floating_point() or t.is_nested or t.numel() == 0:
                    continue
                key = storage_key(t)
                value = self._absmax.get(key)
                if value is None:
                    with _disable_current_modes():
                        value = tensor_stats(t.detach()).absmax
                    self._absmax[key] = value
                if value is not None:
                    found = value if found is None else max(found, value)
        except RuntimeError:
            return found
        finally:
            self.suspended = was
        return found

    def _post(self, module: nn.Module, args: tuple[Any, ...], *rest: Any) -> None:
        if not self.stack:
            return
        # (kwargs, output) normally; torch passes no kwargs to always-call hooks after a raising forward
        kwargs, output = rest if len(rest) == 2 else ({}, rest[0])
        row = self.stack.pop()
        live = self._live.pop(row.index, None)
        if row.index in self._producing and live is not None and len(self.calls) < _CAPTURED_CALLS:
            was = self.suspended
            self.suspended = True
            try:
                memo: dict[int, torch.Tensor] = {}
                self.calls[row.index] = (module, _cloned(live[0], memo), _cloned(kwargs or {}, memo))
                self.call_rng[row.index] = live[1]
            finally:
                self.suspended = was
        was = self.suspended
        self.suspended = True
        try:
            tensors = [t for _, t in tensor_leaves(output)]
            if self._first_producing is not None and row.index > self._first_producing + STATS_AFTER \
                    and row.index != 0:
                self._flag_only(row, tensors)  # far past the first producer: outside every report window
                return
            with _disable_current_modes():  # the statistics' own ops need no watching
                stats = _fold_stats(tensors)
            for key, value in stats.items():
                setattr(row, key, value)
            for t in tensors:
                if t.is_floating_point() and not t.is_nested:
                    self._absmax[storage_key(t)] = row.absmax
            if row.nonfinite:
                self.call_samples[row.index] = self._rows_of(tensors)
            if self.backward:
                self._label_graph(row, tensors)
        except RuntimeError:
            pass
        finally:
            self.suspended = was

    def _flag_only(self, row: LayerRow, tensors: list[torch.Tensor]) -> None:
        """A call far past the first producer: whether its outputs are non-finite (from the kinds the ops
        already found), without statistics."""
        kinds = FINITE
        for t in tensors:
            if t.is_floating_point() or t.is_complex():
                kinds |= self._known.get(storage_key(t), FINITE)
        row.nan = int(bool(kinds & NAN))
        row.inf = int(bool(kinds & INF))
        for t in tensors:
            if t.is_floating_point() and not t.is_nested:
                self._absmax[storage_key(t)] = None

    def _label_graph(self, row: LayerRow, outputs: list[torch.Tensor]) -> None:
        """Name the autograd nodes created inside this call (innermost calls label theirs first)."""
        stop = self._input_grad_fns.pop(row.index, set())
        todo = [t.grad_fn for t in outputs if t.grad_fn is not None]
        seen: set[int] = set()
        while todo:
            node = todo.pop()
            if node is None or id(node) in seen or node in stop:
                continue
            seen.add(id(node))
            meta = node.metadata
            if _TRACKED_ATTR in meta:
                continue
            meta[_TRACKED_ATTR] = (row.module, row.module_type)
            todo.extend(n for n, _ in node.next_functions if n is not None)

    # ---------------------------------------------------------------- op observation
    def observe(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any,
                before: dict[int, Kind] | None = None) -> None:
        """Record ``func`` if it emitted a non-finite value; ``before`` holds the kinds of the tensors it
        mutated, as they were before it ran."""
        op = _op_name(func)
        self.ops_seen.add(op)
        if _allocates_uninitialized(op):  # garbage bits can look like NaN: never evidence
            self.uninitialized.update(storage_key(t) for t in _flat_tensors(out))
            return
        if before is not None and self.uninitialized:
            for t in _mutable_args(func, args, kwargs):
                key = storage_key(t)
                if key in self.uninitialized:
                    self.uninitialized.discard(key)
                    before[id(t)] = FINITE
        node = torch._C._current_autograd_node()
        phase = "backward" if node is not None else "forward"
        if phase == "forward" and is_mask_consumer(op):
            rows = fully_masked(op, args, kwargs, self.batch_size)
            if rows:
                self.attention.append({"op": op, "module": self._current()[0], "rows": rows})
        outs = [t for t in _flat_tensors(out) if t.is_floating_point() or t.is_complex()]
        if not outs:
            return
        bad_in: list[tuple[Any, Kind]] = []
        for t in _flat_tensors((args, kwargs)):
            if not (t.is_floating_point() or t.is_complex()):
                continue
            if before is not None and id(t) in before:
                k = before[id(t)]
            else:  # an earlier op's output is known already: no second pass over it
                k = self._known.get(storage_key(t))
                k = tensor_kinds(t) if k is None or _view_of_part(t) else k
            if k:
                bad_in.append((storage_key(t), k))
        # An op fed non-finite values only carries them on: one sum says which kinds (NaN, or one infinity),
        # where a producer's output gets the exact count of every kind.
        kinds_of = sum_kinds if bad_in and not is_mask_consumer(op) else tensor_kinds
        found = [(t, kinds_of(t)) for t in outs]
        for t, k in found:
            self._known[storage_key(t)] = k
        bad_out = [(t, k) for t, k in found if k]
        if not bad_out:
            return
        if phase == "backward":
            module, module_type = node.metadata.get(_TRACKED_ATTR, ("", ""))
        else:
            module, module_type = self._current()
        event = OpEvent(index=len(self.events), op=op, module=module, module_type=module_type, phase=phase,
                        out_keys=[storage_key(t) for t, _ in bad_out], in_keys=[k for k, _ in bad_in],
                        in_kinds=[k for _, k in bad_in], out_kinds=[k for _, k in bad_out],
                        mask_consumer=is_mask_consumer(op),
                        call=self.stack[-1].index if self.stack and phase == "forward" else None)
        if node is not None:
            event.node = node.name()
            event.op = _forward_op(event.node) or op
            event.inner_op = op
        if event.producer:
            if phase == "forward" and self.stack:
                self._producing.add(self.stack[-1].index)
                if self._first_producing is None:
                    self._first_producing = self.stack[-1].index
            event.samples = self._rows_of([t for t, _ in bad_out])
            if phase == "forward":
                event.source = user_source()
            elif node is not None:
                event.source = _source_from_trace(node.metadata.get("traceback_"))
            if len(self.op_calls) < _CAPTURED_CALLS:
                self.op_calls[event.index] = (OpCall(op, _detached(args), _detached(kwargs)) if node is None
                                              else _saved_call(event.op, node))
        self.events.append(event)

    def _current(self) -> tuple[str, str]:
        if self.stack:
            return self.stack[-1].module, self.stack[-1].module_type
        return "", type(self.model).__name__

    def _rows_of(self, tensors: list[torch.Tensor]) -> list[int]:
        size = self.batch_size
        found: set[int] = set()
        for t in tensors:
            if size is None or t.is_nested or t.dim() == 0:
                continue
            if t.shape[0] != size:  # (L, B, E) of a batch_first=False module
                if t.dim() < 2 or t.shape[1] != size:
                    continue
                t = t.transpose(0, 1)
            bad = ~torch.isfinite(t.detach())
            found.update(int(i) for i in bad.reshape(size, -1).any(dim=1).nonzero().flatten().tolist())
        return sorted(found)


_CAPTURED_CALLS = 16
STATS_AFTER = 48
"""Calls more than this many after the first producing call get no statistics (only whether they are
non-finite): the report's layer window never reaches them, and NaN-flooded outputs are the slowest to
summarise."""
_SAVED = ("_saved_self", "_saved_other", "_saved_exponent", "_saved_result")


def _view_of_part(t: torch.Tensor) -> bool:
    """A view of only part of its storage (a slice): the storage's kinds may not be this view's."""
    try:
        return t.numel() * t.element_size() < t.untyped_storage().nbytes()
    except (RuntimeError, NotImplementedError, TypeError):
        return True


def _cloned(obj: Any, memo: dict[int, torch.Tensor] | None = None) -> Any:
    """Tensors detached and cloned (so later in-place writes cannot change them), structure and aliasing
    kept: the same tensor passed twice stays one tensor (MHA's fast path needs ``query is key is value``)."""
    memo = {} if memo is None else memo
    if isinstance(obj, torch.Tensor):
        if id(obj) not in memo:
            memo[id(obj)] = obj.detach().clone()
        return memo[id(obj)]
    if isinstance(obj, (tuple, list)):
        return type(obj)(_cloned(v, memo) for v in obj)
    if isinstance(obj, dict):
        return {k: _cloned(v, memo) for k, v in obj.items()}
    return obj


def _detached(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if isinstance(obj, (tuple, list)):
        return type(obj)(_detached(v) for v in obj)
    if isinstance(obj, dict):
        return {k: _detached(v) for k, v in obj.items()}
    return obj


def _saved_call(op: str, node: Any) -> OpCall:
    """A backward node's forward op and the inputs it saved (``self``, ``other``/``exponent``, or the
    forward ``result`` when that is all it kept), laid out as the forward op's arguments."""
    values = []
    for name in _SAVED:
        try:
            value = getattr(node, name)
        except (AttributeError, RuntimeError):  # not saved by this node, or already freed
            continue
        values.append(value.detach() if isinstance(value, torch.Tensor) else value)
    return OpCall(op, tuple(values))


def _forward_op(node: str) -> str | None:
    """``SqrtBackward0`` -> ``aten.sqrt``; ``NativeLayerNormBackward0`` -> ``aten.native_layer_norm``."""
    stem = re.sub(r"Backward\d*$", "", node.rsplit("::", 1)[-1])
    if not stem or stem == node:
        return None
    return "aten." + re.sub(r"(?<!^)(?=[A-Z])", "_", stem).lower()


def _op_name(func: Any) -> str:
    name = getattr(func, "__name__", str(func))  # e.g. "log.default"
    packet = name.split(".")[0]
    return f"aten.{packet}" if getattr(func, "namespace", "aten") == "aten" else f"{func.namespace}.{packet}"
