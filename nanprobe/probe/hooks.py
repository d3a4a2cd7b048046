"""The probe: hooks on every (selected) module that record one :class:`CallRecord` per call.

Hot path (per call): the pre-hook checks the inputs for NaN/Inf (one ``sum`` per floating input not yet
seen in this step, as some call's output or some call's input) and pushes a frame; the post-hook summarises
the outputs (:func:`nanprobe.stats.tensor_stats`' short path on the CPU, about five vectorised passes; on
other devices a stats vector that is read back later, stacked with the others, when ``ring_size`` records
are pending or at :meth:`Probe.result`). A tensor already summarised in this step (a container returning
its last child's output, an eval-mode Dropout) is not summarised again. Only scalars are kept: tensors are
referenced weakly (identity + version counter) and only for the current step.

Classification happens when records are processed (in completion order, children before the calls that
contain them). A call *produced* a kind of non-finite value (``nan``/``inf``) when its output carries it,
its inputs did not, and no probed call nested inside it emitted it (nesting comes from pre/post-hook
pairing, never from module types). One exception: when Inf came in (inputs or a nested call) and NaN came
out, the call only passed the Inf on unless its share of non-finite outputs is smaller than the share of
Inf it received (log(0) -> Linear -> NaN: Log is the producer; -inf-masked scores -> softmax -> NaN for a
fully masked row: the softmax is). At the end of each top-level call (a *step*) the kinds at its output
decide: the first producer of such a kind is the origin (or the batch, ``<input>``, when the batch already
carried it; Inf counts for NaN when a call passed Inf on as NaN); producers of kinds that never reached
the output are latent. A module whose own parameters are non-finite is still a producer
(``nonfinite_params`` says why). Float additive masks (0 and -inf only) are not non-finite inputs.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from nanprobe._hooks import remove_handle
from nanprobe.errors import InputError, NanprobeError
from nanprobe.kinds import FINITE, INF, Kind, nonfinite_tensors, report_kind, tensor_kinds
from nanprobe.probe import special
from nanprobe.probe.classify import Classifier
from nanprobe.probe.filters import NameFilter, make_predicate
from nanprobe.probe.readback import LazyStats, ReadBackQueue, input_flags, lazy_stats
from nanprobe.probe.records import INPUT, CallRecord, is_additive_mask, nonfinite_rows
from nanprobe.probe.result import ProbeResult, assign_roles
from nanprobe.stats import TensorStats, dense, release_scratch, tensor_stats
from nanprobe.walk import iter_tensors

__all__ = ["NameFilter", "Probe"]


@dataclasses.dataclass(slots=True)
class _Frame:
    module: int  # id() of the module, to pair post-hooks with pre-hooks after a raising child
    index: int
    parent: int | None
    depth: int
    in_kinds: Kind
    in_inf: float
    """Largest fraction of Inf values among the inputs (0.0 when none)."""
    extra: dict[str, Any]
    lazy_in: list[torch.Tensor]


class Probe:
    """Record every module call of ``model`` and find the call that produced the first NaN/Inf.

    ``include``/``exclude`` select modules by qualified name (a glob, a list of globs, or a callable
    ``(name, module) -> bool``); ``types`` keeps only modules of these classes. The root module is always
    probed: its calls delimit steps and its output decides the status. ``ring_size`` bounds the number of
    records kept (the last ones) on top of the first ``keep_nonfinite`` non-finite records, the origin and
    the first latent producers. ``backward=True`` adds full backward hooks and per-parameter gradient hooks.

    Samples: the batch size is dim 0 of the first tensor passed to a top-level call; a tensor's batch
    dim is dim 0 if it has that size, else its first dim of that size (``(L, B, E)`` attention layouts).

    Modules inside an ``nn.TransformerEncoderLayer`` (and the layer itself) are watched through global
    module hooks, because per-module hooks would switch off its native fast path (and the NaN it makes).
    ``backward=True`` uses ``register_full_backward_hook``: like any full backward hook it makes an in-place
    change of a watched module's output (``nn.ReLU(inplace=True)``) an autograd error.
    Off the CPU, statistics are read back in batches; the batch itself and backward gradients are read at
    once. The model's train/eval flags and grad mode are never changed.
    """

    def __init__(self, model: nn.Module, *, include: NameFilter = None, exclude: NameFilter = None,
                 types: tuple[type[nn.Module], ...] | None = None, ring_size: int = 256,
                 keep_nonfinite: int = 32, backward: bool = False) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"Probe needs an nn.Module, got {type(model).__name__}")
        if ring_size < 1 or keep_nonfinite < 0:
            raise InputError("ring_size must be >= 1 and keep_nonfinite >= 0")
        self.model = model
        self.backward = backward
        self.ring_size = ring_size
        self.keep_nonfinite = keep_nonfinite
        want = make_predicate(include, True)
        drop = make_predicate(exclude, False)
        self._selected = lambda name, m: (name == "" or (
            want(name, m) and not drop(name, m) and (types is None or isinstance(m, types))))
        self._handles: list[RemovableHandle] = []
        self._global: dict[int, tuple[str, special.Extractor | None]] = {}
        self._active = False
        self._force_vector = False  # tests: take the device (batched read-back) path on the CPU
        self._reset()

    # ----------------------------------------------------------------- state
    def _reset(self) -> None:
        self._classifier = Classifier(ring_size=self.ring_size, keep_nonfinite=self.keep_nonfinite)
        self._queue = ReadBackQueue(self.ring_size)
        self._index = 0
        self._step_no = 0
        self._batch: int | None = None
        self._stack: list[_Frame] = []
        self._input_record: CallRecord | None = None
        self._bw_in: dict[int, Kind] = {}
        self._bad_params: list[str] = []
        # id(tensor) -> (weak ref, version, kinds, stats or None when only its kinds were checked)
        self._seen: dict[int, tuple[Any, int, Kind, TensorStats | None]] = {}
        self._calls = 0

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> Probe:
        if self._active:
            raise NanprobeError("this Probe is already attached; use one Probe per `with` block")
        self._active = True
        try:
            self._attach()
            self._scan_params()
        except BaseException:
            self._detach()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._detach()

    def _detach(self) -> None:
        try:
            while self._handles:
                remove_handle(self._handles.pop())
        finally:
            self._global.clear()
            self._stack.clear()
            self._seen.clear()
            self._active = False
            release_scratch()

    def _attach(self) -> None:
        owner: dict[int, tuple[str, nn.Module, str]] = {}
        # A TransformerEncoderLayer refuses its fast path (and so hides its NaN) when it or a submodule has
        # forward hooks of its own; its subtree is watched through global hooks instead, which it ignores.
        fast_path_ids = {id(m) for tel in self.model.modules() if isinstance(tel, nn.TransformerEncoderLayer)
                         for m in tel.modules()}
        for name, module in self.model.named_modules():
            for pname, param in module.named_parameters(recurse=False):
                owner.setdefault(id(param), (name, module, pname))
            if not self._selected(name, module):
                continue
            extra = special.extra_for(module)
            if id(module) in fast_path_ids:
                self._global[id(module)] = (name, extra)
            else:
                self._handles.append(module.register_forward_pre_hook(self._make_pre(name, extra),
                                                                      with_kwargs=True))
                self._handles.append(module.register_forward_hook(self._make_post(name), always_call=True))
            if self.backward:
                self._handles.append(module.register_full_backward_pre_hook(self._backward_pre))
                self._handles.append(module.register_full_backward_hook(self._make_backward(name)))
        if self._global:
            self._handles.append(nn.modules.module.register_module_forward_pre_hook(self._global_pre))
            self._handles.append(nn.modules.module.register_module_forward_hook(self._global_post,
                                                                                with_kwargs=True,
                                                                                always_call=True))
        if self.backward:
            for param in self.model.parameters():
                if param.requires_grad and id(param) in owner:
                    self._handles.append(param.register_post_accumulate_grad_hook(
                        self._make_grad_hook(*owner[id(param)])))

    def _scan_params(self) -> None:
        found = nonfinite_tensors([*self.model.named_parameters(), *self.model.named_buffers()])
        self._bad_params.extend(n for n in found if n not in self._bad_params)

    # ------------------------------------------------------------- forward
    def _make_pre(self, name: str, extra_fn: special.Extractor | None) -> Callable[..., None]:
        def pre(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            self._on_pre(module, name, args, kwargs, extra_fn)
        return pre

    def _make_post(self, name: str) -> Callable[..., None]:
        def post(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            self._on_post(module, name, output)
        return post

    def _on_pre(self, module: nn.Module, name: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                extra_fn: special.Extractor | None) -> None:
        stack = self._stack
        if stack and module is self.model:
            stack.clear()  # frames left by a forward that raised: the root is never nested in itself
        index = self._index
        self._index += 1
        if not stack:
            self._begin_step(args, kwargs)
        in_kinds, in_inf, lazy_in = self._input_kinds(args, kwargs)
        extra = extra_fn(module, args, kwargs) if extra_fn is not None else {}
        parent = stack[-1].index if stack else None
        stack.append(_Frame(id(module), index, parent, len(stack), in_kinds, in_inf, extra, lazy_in))

    def _global_pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        entry = self._global.get(id(module))
        if entry is not None:  # global pre-hooks see no kwargs: those are read in the post-hook
            self._on_pre(module, entry[0], args, {}, None)

    def _global_post(self, module: nn.Module, args: tuple[Any, ...], *rest: Any) -> None:
        entry = self._global.get(id(module))
        if entry is None:
            return
        # (kwargs, output) normally; torch calls always-call hooks without kwargs after a raising forward
        kwargs, output = rest if len(rest) == 2 else ({}, rest[0])
        name, extra_fn = entry
        if self._stack and self._stack[-1].module == id(module):
            frame = self._stack[-1]
            if kwargs:
                kinds, inf, lazy = self._input_kinds((), kwargs)
                frame.in_kinds |= kinds
                frame.in_inf = max(frame.in_inf, inf)
                frame.lazy_in.extend(lazy)
            if extra_fn is not None:
                frame.extra = extra_fn(module, args, kwargs)
        self._on_post(module, name, output)

    def _begin_step(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._step_no += 1
        self._seen.clear()
        self._batch = None
        leaves = [*iter_tensors(args, "in"), *(pt for k, v in kwargs.items() for pt in iter_tensors(v, f"in.{k}"))]
        for _, t in leaves:
            if t.dim() > 0:
                self._batch = int(t.shape[0])
                break
        outputs: dict[str, TensorStats] = {}
        rows: set[int] = set()
        for path, t in leaves:
            if (t.dtype.is_floating_point or t.dtype.is_complex) and (
                    t.device.type != "cpu" or self._check_kinds(t)):
                s = tensor_stats(t)
                if s.nonfinite and not is_additive_mask(t.detach()):
                    outputs[path] = s
                    rows.update(nonfinite_rows(t, self._batch))
        if outputs:
            rec = CallRecord(index=-1, module=INPUT, module_type=INPUT, inputs_finite=False, outputs=outputs,
                             samples=sorted(rows), step=self._step_no, order=-1)
            rec.produced = rec.out_kinds
            rec.kind = report_kind(rec.produced)
            self._classifier.note_input(self._step_no, rec)
            if self._input_record is None:
                self._input_record = rec

    def _check_kinds(self, t: torch.Tensor) -> Kind:
        """Non-finite kinds of a floating CPU tensor, remembered for the step (by identity and version)."""
        key = id(t)
        hit = self._seen.get(key)
        version = _version(t)
        if hit is not None and hit[0]() is t and hit[1] == version:
            return hit[2]
        found = _cpu_kinds(t.detach())
        if version is not None:
            self._seen[key] = (weakref.ref(t), version, found, None)
        return found

    def _input_kinds(self, args: tuple[Any, ...], kwargs: dict[str, Any]
                     ) -> tuple[Kind, float, list[torch.Tensor]]:
        """Kinds of non-finite values in the inputs, and the largest fraction of Inf in one (rare path)."""
        kinds = FINITE
        inf_frac = 0.0
        lazy: list[torch.Tensor] = []
        if kwargs or not all(isinstance(a, torch.Tensor) for a in args):
            leaves: Any = list({id(t): t for _, t in iter_tensors((args, kwargs), "")}.values())  # each once
        elif len(args) == 1:
            leaves = args  # the common case: one positional tensor
        else:
            leaves = list({id(a): a for a in args}.values())  # positional tensors only, each once
        vector = self._force_vector
        for t in leaves:
            if not (t.dtype.is_floating_point or t.dtype.is_complex):
                continue
            if t.device.type == "cpu" and not vector:
                found = self._check_kinds(t)
            else:
                hit = self._seen.get(id(t))
                if hit is not None and hit[0]() is t and hit[1] == _version(t):
                    found = hit[2]
                else:
                    if t.numel():
                        lazy.append(input_flags(t))
                    continue
            if not found or (found == INF and is_additive_mask(t.detach())):
                continue  # finite, or a float attention mask: its -inf are on purpose
            kinds = kinds | found
            if found & INF:
                inf_frac = max(inf_frac, tensor_stats(t.detach()).inf_fraction)
        return Kind(kinds), inf_frac, lazy

    def _on_post(self, module: nn.Module, name: str, output: Any) -> None:
        stack = self._stack
        key = id(module)
        while stack and stack[-1].module != key:
            stack.pop()  # frames whose post-hook never came
        if not stack:
            return  # attached in the middle of a call: nothing to pair with
        frame = stack.pop()
        if output is None and sys.exc_info()[1] is not None:
            return  # always-call hook after the forward raised: the call has no output to record
        outputs: dict[str, TensorStats] = {}
        lazy_out: list[tuple[str, LazyStats]] = []
        rows: list[int] = []
        bad = False
        leaves = (("out", output),) if isinstance(output, torch.Tensor) else iter_tensors(output, "out")
        seen = self._seen
        vector = self._force_vector
        for path, t in leaves:
            if t.device.type == "cpu" and not vector:
                hit = seen.get(id(t))
                version = _version(t)
                if hit is not None and hit[3] is not None and hit[0]() is t and hit[1] == version:
                    s = hit[3]  # the same tensor as a call nested in this one returned (Sequential, Dropout)
                else:
                    s = tensor_stats(t.detach())
                    if version is not None:
                        seen[id(t)] = (weakref.ref(t), version, s.kinds.coarse(), s)
                outputs[path] = s
                if s.nan or s.posinf or s.neginf:
                    bad = True
                    rows.extend(nonfinite_rows(t.detach(), self._batch))
            else:
                lazy_out.append((path, lazy_stats(t.detach(), self._batch)))
        extra = frame.extra
        if extra:
            deferred = extra.pop(special.DEFERRED, None)
            if deferred is not None and (lazy_out or bad):
                extra.update(deferred())
            on_device = any(isinstance(v, torch.Tensor) for v in extra.values())
        else:
            on_device = False
        rec = CallRecord(index=frame.index, module=name, module_type=type(module).__name__,
                         inputs_finite=not frame.in_kinds, outputs=outputs,
                         samples=sorted(set(rows)) if rows else [], extra=extra, step=self._step_no,
                         depth=frame.depth, parent=frame.parent, in_kinds=frame.in_kinds)
        self._classifier.note_inf_fraction(rec.index, frame.in_inf)
        self._calls += 1
        if not (frame.lazy_in or lazy_out or len(self._queue) or on_device):
            self._classifier.process(rec)
            return
        if self._queue.push(rec, frame.lazy_in, lazy_out):
            self._flush()

    def _flush(self) -> None:
        for rec, inf in self._queue.flush():
            self._classifier.note_inf_fraction(rec.index, inf)
            self._classifier.process(rec)

    # ------------------------------------------------------------ backward
    def _backward_pre(self, module: nn.Module, grad_output: tuple[Any, ...]) -> None:
        self._bw_in[id(module)] = _kinds_of(grad_output)

    def _make_backward(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, grad_input: tuple[Any, ...], grad_output: tuple[Any, ...]) -> None:
            outputs = {p: tensor_stats(t) for p, t in iter_tensors(grad_input, "grad_in")}
            self._add_backward(module, name, _kinds_of(grad_output), outputs)
        return hook

    def _make_grad_hook(self, name: str, module: nn.Module, pname: str) -> Callable[[torch.Tensor], None]:
        def hook(param: torch.Tensor) -> None:
            if param.grad is not None:
                s = tensor_stats(param.grad)
                if s.nonfinite:
                    self._add_backward(module, name, self._bw_in.get(id(module), FINITE), {f"grad.{pname}": s})
        return hook

    def _add_backward(self, module: nn.Module, name: str, in_kinds: Kind, outputs: dict[str, TensorStats]) -> None:
        rec = CallRecord(index=self._index, module=name, module_type=type(module).__name__, phase="backward",
                         inputs_finite=not in_kinds, outputs=outputs, step=self._step_no, in_kinds=in_kinds)
        self._index += 1
        self._classifier.process_backward(rec)

    # --------------------------------------------------------------- result
    def result(self) -> ProbeResult:
        """Classify what was recorded so far (callable inside or after the ``with`` block)."""
        self._flush()
        self._scan_params()
        c = self._classifier
        keep: dict[int, CallRecord] = {}
        pinned = [r for r in (c.origin, c.backward_origin) if r is not None and r.module != INPUT]
        for rec in [*c.kept, *c.latent, *pinned, *c.ring]:
            keep[rec.index] = rec
        records = sorted(keep.values(), key=lambda r: r.index)
        bad = list(self._bad_params)
        for rec in records:
            prefix = f"{rec.module}." if rec.module else ""
            rec.nonfinite_params = [n for n in bad if n.startswith(prefix)]
            rec.params_finite = not [n for n in rec.nonfinite_params if "." not in n[len(prefix):]]
        assign_roles(records, c.origin, c.backward_origin, c.step_kinds)
        status = "nonfinite" if (c.step_kinds or c.backward_nonfinite) else "clean"
        return ProbeResult(status=status, origin=c.origin, backward_origin=c.backward_origin,
                           input_nonfinite=_input_summary(self._input_record),
                           nonfinite_parameters=bad, latent=list(c.latent), records=records,
                           calls=self._calls)


def _version(t: torch.Tensor) -> int | None:
    """The in-place version counter; ``None`` for inference tensors (they have none: never cached)."""
    return None if t.is_inference() else t._version


def _cpu_kinds(x: torch.Tensor) -> Kind:
    """Non-finite kinds of a CPU tensor, without their sign: a sum (one fast pass) clears the common
    all-finite case."""
    x = dense(x)
    if x.numel() == 0:
        return FINITE
    if not x.is_complex() and math.isfinite(x.sum().item()):
        return FINITE
    return tensor_kinds(x).coarse()


def _kinds_of(obj: Any) -> Kind:
    kinds = FINITE
    for _, t in iter_tensors(obj, ""):
        kinds |= tensor_kinds(t)
    return Kind(kinds).coarse()


def _input_summary(rec: CallRecord | None) -> dict[str, Any] | None:
    if rec is None:
        return None
    return {"paths": list(rec.outputs), "kind": rec.kind, "samples": list(rec.samples), "step": rec.step}
