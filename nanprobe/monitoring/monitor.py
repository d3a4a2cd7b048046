"""The monitor: watch a model's own calls in a training or eval loop, catch the first non-finite step cheaply,
and leave a post-mortem bundle that explains it.

    with monitor(model, out_dir="nan-bundles") as mon:   # the loop itself is unchanged
        for x, y in loader:
            loss = loss_fn(model(x), y)
            mon.check_loss(loss).backward()                 # optional: loss and gradient checks
            mon.after_backward()
            optimizer.step()

At ``depth="sentinel"`` (the default) it adds no per-module hook (so native fast paths stay on), captures the
RNG before each top-level call and reads one flag back per call. ``depth="full"`` also re-runs every
``every``-th step's batch under the per-layer probe (a separate, side-effect-free run) and keeps the per-layer
stats. Steps are counted from 0: without ``mon.step()`` every top-level model call is one step.
"""

from __future__ import annotations

import functools
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nanprobe.batches import ModelCall, batch_size
from nanprobe.diagnosis.optimizer import hazard_message, optimizer_entry, optimizer_findings
from nanprobe.errors import GrowthError, InputError, NonFiniteError
from nanprobe.execution import mode_of
from nanprobe.monitoring.distributed import RankSync, rank_and_world
from nanprobe.monitoring.failure import Failure, Handling, Position, handle_failure, handle_warning
from nanprobe.monitoring.history import History, scalar
from nanprobe.monitoring.methods import patch_method
from nanprobe.monitoring.signals import READ_LATE, Signals
from nanprobe.monitoring.snapshots import layer_snapshot
from nanprobe.monitoring.spikes import SpikeWatch, gradient_spike, outlier_row
from nanprobe.monitoring.step import Depth, Detected, Policy, StepCall
from nanprobe.monitoring.warning import EarlyWarning, GrowthWatch, narrow
from nanprobe.postmortem.assemble import ModelSource
from nanprobe.report.history import Outlier
from nanprobe.rng import RNGState
from nanprobe.sentinel import CLEAN, FiniteCheck, check_finite, check_gradients, check_parameters
from nanprobe.watch import CallEvent, Watcher, eager

__all__ = ["Depth", "GrowthWarning", "Monitor", "MonitorSettings", "NonFiniteWarning", "Policy", "monitor"]


class NonFiniteWarning(RuntimeWarning):
    """Issued by ``on_nonfinite="warn"`` after the bundle is written, and in ``dump``/``warn`` mode when
    nanprobe itself failed while handling a non-finite step (the run goes on)."""


class GrowthWarning(RuntimeWarning):
    """The early warning (``on_warning="warn"``): a signal is growing towards overflow."""


class MonitorWarning(UserWarning):
    """The monitor is not set up to see anything (e.g. it watched no model call)."""


@dataclass
class MonitorSettings:
    """Everything :func:`monitor` was given, validated."""

    handling: Handling
    every: int = 100
    history: int = 200
    layer_snapshots: int = 8
    methods: tuple[str, ...] = ()
    on_warning: Policy = Policy.WARN
    warn_fraction: float = 0.1

    @property
    def depth(self) -> Depth:
        return self.handling.depth

    @property
    def on_nonfinite(self) -> Policy:
        return self.handling.policy


class Monitor:
    """Created by :func:`monitor`; use it as a context manager (or :meth:`start` / :meth:`stop`)."""

    def __init__(self, model: nn.Module, settings: MonitorSettings, *, optimizer: Any | None = None,
                 scaler: Any | None = None, distributed: bool | None = None, group: Any | None = None) -> None:
        self.model = model
        self.settings = settings
        self._distributed = distributed
        self._group = group
        self.sync: RankSync | None = None
        self.rank, self.world_size = rank_and_world()
        self.history = History(settings.history)
        self.signals = Signals(self.history)
        self.watch = GrowthWatch(fraction=settings.warn_fraction)
        self.spikes = SpikeWatch()
        self.warnings: list[EarlyWarning] = []
        self._attach_later = (optimizer, scaler)
        self._warned_idle = False
        self.layer_history: deque[dict[str, Any]] = deque(maxlen=settings.layer_snapshots)
        """Full depth: ``{"step": k, "layers": [LayerRow, ...]}`` of the last snapshots."""
        self.failures: list[Failure] = []
        self.nonfinite_steps = 0
        self.calls = 0
        self.epoch: int | None = None
        self._step = 0
        self._manual = False
        self._last: StepCall | None = None
        self._pending: list[Detected] = []
        self._warned_internal = False
        self._warned_signals = False  # nanprobe's own failure in the optimizer's step hooks was warned about
        self._dtype: torch.dtype | None = None
        self._loss_dtype: torch.dtype | None = None  # the loss tensor's: float32 when float16 outputs meet float32
        self._watcher = Watcher(self._on_call, capture_rng=True, check_outputs=False)
        self._undo: list[Callable[[], None]] = []
        # set by a framework's callback (attach_framework)
        self._framework = False
        self._listeners: list[Callable[[CallEvent], None]] = []
        self._rerun: list[Callable[[], AbstractContextManager[Any]]] = []
        self._on_stop: list[Callable[[], None]] = []
        self._compiled = False
        self._autocast: tuple[tuple[str, torch.dtype], ...] = ()  # the last call's autocast regions
        self._hazard: str | None = None  # what the attached optimizer's step will do (warned once)
        self._queued_warnings: list[EarlyWarning] = []  # found by a layer snapshot, given with the step's others
        self._searched: tuple[int, Outlier | None] | None = None  # the step whose batch was searched for an outlier

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> Monitor:
        self.sync = RankSync.detect(self._distributed, self._group)
        if self.sync is not None:
            self.rank, self.world_size = self.sync.rank, self.sync.world_size
        self._watcher.watch(self.model, type(self.model).__name__)
        self.attach(*self._attach_later)
        for name in _EAGER:  # never traced by Dynamo: under torch.compile the graph breaks there (see watch.py)
            if name not in self.__dict__:
                setattr(self, name, eager(getattr(self, name)))
        try:
            for method in self.settings.methods:
                self._undo.append(patch_method(self.model, method, lambda fn, m=method: self._wrap(fn, m)))
            self._watcher.install()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        undo, self._undo = self._undo, []
        for fn in reversed(undo):
            fn()
        self._watcher.remove()
        self._watcher.unwatch(self.model)
        self.signals.detach_optimizer()
        self._warn_if_idle("by the end of the run")
        self._last = None
        self._pending.clear()
        on_stop, self._on_stop = self._on_stop, []
        for fn in on_stop:
            fn()

    def __enter__(self) -> Monitor:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        pending = list(self._pending)
        self.stop()
        if pending and exc_type is None:  # found after the last agreement point: handled on this rank alone
            self._handle(pending, [self.rank])

    # -- public API ------------------------------------------------------------------------------
    @property
    def current_step(self) -> int:
        return self._step

    @property
    def optimizer(self) -> Any | None:
        return self.signals.optimizer

    @property
    def param_history(self) -> list[dict[str, Any]]:
        """Per-parameter gradient norms of the last steps (``{"step", "norms": {name: norm}}``)."""
        return list(self.signals.param_history)

    def attach(self, optimizer: Any | None = None, scaler: Any | None = None) -> None:
        """Attach an optimizer (learning rate, update ratio) or a GradScaler (loss scale; its skipped
        overflow steps are recorded, not reported) created after the monitor, e.g. by a framework. An optimizer
        whose step cannot work for its parameters' dtype (Adam's eps is 0 in float16) is warned about at the next
        check, before any NaN."""
        new = optimizer is not None and optimizer is not self.signals.optimizer  # frameworks attach it repeatedly
        self.signals.attach(optimizer, scaler)
        if new:
            self._hazard = hazard_message(optimizer_findings(optimizer, _unwrap(self.model)))
            entry = optimizer_entry(optimizer)  # the table says whether clipping the gradient bounds the step
            self.watch.clipping_bounds_steps = entry is not None and entry.step_follows_gradient

    @property
    def bundles(self) -> list[Path]:
        return [f.bundle for f in self.failures if f.bundle is not None]

    def step(self, epoch: int | None = None) -> None:
        """Mark the end of a training step (optional: without it every top-level model call is one step).
        Under torch.distributed this is where the ranks agree (every rank must call it)."""
        self._manual = True
        if self.sync is not None:
            self._exchange(None)
        self._warn_if_idle("by the end of a step")
        self._advance()
        if epoch is not None:
            self.epoch = epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def attach_framework(self, step: int, *, on_call: Callable[[CallEvent], None] | None = None,
                         rerun: Callable[[], AbstractContextManager[Any]] | None = None,
                         on_stop: Callable[[], None] | None = None) -> None:
        """For a framework's callback (``nanprobe.integrations``), which owns the loop: the current step becomes
        ``step`` (the framework's global step) and steps advance only at :meth:`step`; under torch.distributed
        the ranks still agree at every grad-enabled model call (a framework makes the same calls on every
        rank), so a rank's NaN stops all of them before the optimizer step. ``on_call(event)`` runs after each
        watched call (e.g. to log the loss a model returns); ``rerun()`` is entered whenever nanprobe re-runs
        the model itself (a diagnosis, a layer snapshot), e.g. to silence the framework's logging;
        ``on_stop()`` runs when the monitor stops (the callback releases what it added). With
        ``on_nonfinite="raise"`` the monitor stops before it raises (no ``with`` block does it)."""
        self._manual = self._framework = True
        self._step = step
        self.signals.at_step(step)
        if on_call is not None:
            self._listeners.append(on_call)
        if rerun is not None:
            self._rerun.append(rerun)
        if on_stop is not None:
            self._on_stop.append(on_stop)

    def log(self, **values: Any) -> None:
        """Record scalars for this step (``loss=``, ``grad_norm=``, ``lr=``, anything numeric). Values are
        stored as floats in a ring buffer of ``history`` steps; a tensor costs one host read."""
        if "epoch" in values and values["epoch"] is not None:
            self.epoch = int(values["epoch"])
        self.history.log(self._step, values)

    def check_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """Check a loss (and log it); returns it unchanged, so ``mon.check_loss(loss).backward()`` works.
        One host read, which also gives the logged value."""
        value = scalar(loss)
        if isinstance(loss, torch.Tensor) and loss.is_floating_point():
            self._loss_dtype = loss.dtype
        self.history.log(self._step, {"loss": value})
        if value is not None and not _finite(value):
            kind = "nan" if value != value else "inf"
            self._spiked()  # the outputs of this step's batch may have jumped: the bundle's history says so
            self._found(Detected("loss", FiniteCheck(True, kind, ("loss",), ()), self._last))
        else:
            self._early()
        return loss

    def after_backward(self, model: nn.Module | None = None) -> float | None:
        """Check every parameter's gradient after ``backward()`` (before the optimizer step) and log the
        gradient norms (total, per optimizer group, per parameter) and the loss scale; returns the total
        norm (unscaled when a GradScaler is attached). One host read. With a GradScaler, a step whose
        gradients overflowed is the scaler's own business (it skips the step): recorded, not reported."""
        target = _unwrap(model if model is not None else self.model)
        reading = self.signals.read_gradients(self._step, target, absmax=narrow(self._dtype))
        if reading is None:
            return None
        if not reading.finite and not reading.scaler_skipped:
            check = check_gradients(target)
            if check.nonfinite:
                self._found(Detected("backward", check, self._last))
                return reading.total
        self._early()
        return reading.total

    # -- the hook --------------------------------------------------------------------------------
    def _wrap(self, fn: Callable[..., Any], method: str) -> Callable[..., Any]:
        """What the watcher does for ``forward``, for a method: RNG before, arguments and check after."""

        @functools.wraps(fn)  # frameworks read the method's signature (Lightning: does it take batch_idx?)
        def watched(*args: Any, **kwargs: Any) -> Any:
            rng = RNGState.capture()
            with self._watcher.paused():  # its own model(...) calls inside are part of this call
                output = fn(*args, **kwargs)
            self._on_call(CallEvent(model=self.model, name=method, call_index=self.calls,
                                    call=ModelCall(tuple(args), dict(kwargs)), rng=rng, output=output, check=CLEAN,
                                    training=self.model.training, grad_enabled=torch.is_grad_enabled()),
                          method=method)
            return output

        return watched

    def _on_call(self, event: CallEvent, method: str | None = None) -> None:
        self._check_call(event, method)
        for listener in self._listeners:  # a framework's callback (attach_framework)
            listener(event)

    def _check_call(self, event: CallEvent, method: str | None) -> None:
        if not self._manual and self.calls > 0:
            self._advance()
        self.calls += 1
        self._compiled = self._compiled or event.compiled or _is_compiled(self.model)
        self._autocast = _autocast_regions()
        record = StepCall(self._step, self.epoch, event.call, event.rng, mode_of(event.training),
                          event.grad_enabled, method)
        self._last = record
        agree = self.sync is not None and (self._framework or not self._manual) and event.grad_enabled
        reading = self.signals.read_call(self._step, event.output, read=not agree)
        self._dtype = reading.dtype or self._dtype
        if self.settings.depth is Depth.FULL and self._step % self.settings.every == 0:
            self._sample(record)
        if agree:
            self._exchange(reading.flag, event, record)
            return
        if reading.nonfinite:
            check = check_finite(event.output, batch_size=batch_size(event.call))
            # a no-grad (eval) call is never a collective point: ranks may run different numbers of them
            self._found(Detected("forward", check, record), local=not event.grad_enabled)
        else:
            self._early()

    # -- internals -------------------------------------------------------------------------------
    def _advance(self) -> None:
        last = self.history.tail(1)
        if not (last and last[-1]["step"] == self._step and "lr" in last[-1]):  # else the optimizer's step hook
            self.signals.log_lr(self._step)  # recorded the rate it used (a scheduler may have moved it since)
        self._step += 1
        self.signals.at_step(self._step)

    def _warn_if_idle(self, when: str) -> None:
        if self.calls or self._warned_idle:
            return
        self._warned_idle = True
        warnings.warn(f"nanprobe's monitor saw no call of {type(self.model).__name__} {when}: it watches "
                      "model(...) calls. If the loop calls another method, pass methods=('that_method',); if it "
                      "calls an inner module, monitor that module; with Lightning or the Hugging Face Trainer, "
                      "use nanprobe.integrations' NanprobeCallback", MonitorWarning, stacklevel=3)

    def _early(self) -> None:
        """Feed this step's values, and the previous step's that are read back late (``READ_LATE``), to the
        early warning; act on what it raises."""
        found = []
        if self._hazard is not None:
            found.append(EarlyWarning(self._step, "optimizer", self._hazard))
            self._hazard = None
        found, self._queued_warnings = found + self._queued_warnings, []
        rows = self.history.tail(2)
        if rows and rows[-1].get("step") == self._step:
            if len(rows) == 2 and rows[0].get("step") == self._step - 1:
                late = {k: v for k, v in rows[0].items() if k in READ_LATE and isinstance(v, float)}
                if late:
                    found += self.watch.update(self._step - 1, late, self._dtype, self._loss_dtype)
                if rows[0].get("update_ratio") in _NONFINITE_TEXT:
                    self._broke()
            values = {k: v for k, v in rows[-1].items() if isinstance(v, float) and k not in READ_LATE}
            found += self.watch.update(self._step, values, self._dtype, self._loss_dtype)
            found += self._spiked(values)
        if self.signals.errors and not self._warned_signals:
            self._warned_signals = True
            warnings.warn(f"nanprobe could not measure part of a training step (the run goes on; what it could not "
                          f"measure is missing from the history): {self.signals.errors[0]}", MonitorWarning,
                          stacklevel=3)
        for warning in found:
            self.warnings.append(warning)
            self._on_warning(warning)

    def _spiked(self, values: dict[str, float] | None = None) -> list[EarlyWarning]:
        """When this step's batch raised the loss, the gradient norm or the outputs' |max| by orders of magnitude
        at once: log its outlier row, if one stands out, while the batch is still here (the verdict reads it),
        and warn when it is the gradient norm of an optimizer whose step follows it (SGD): that step is about to
        move the weights that many times further. ``values``: this step's finite values (read from its history
        record when None)."""
        if values is None:
            rows = self.history.tail(1)
            if not rows or rows[-1].get("step") != self._step:
                return []
            values = {k: v for k, v in rows[-1].items() if isinstance(v, float)}  # non-finite ones are text
        jumps = self.spikes.update(self._step, values)
        call = self._last
        if not jumps or call is None or call.step != self._step:
            return []
        if self._searched is None or self._searched[0] != self._step:  # once per step
            self._searched = (self._step, self._outlier(call))
            if self._searched[1] is not None:
                self.history.log(self._step, self._searched[1].record())
        outlier = self._searched[1]
        if not self.watch.clipping_bounds_steps or self.watch.clipped_steps(self._step):
            return []  # Adam's step does not follow the gradient's size; clipped steps are bounded
        ratios = [r["update_ratio"] for r in self.history.tail(4)[:-1] if isinstance(r.get("update_ratio"), float)]
        found = [gradient_spike(jump, outlier, ratios) for jump in jumps]
        return [w for w in found if w is not None]

    def _outlier(self, call: StepCall) -> Outlier | None:
        try:
            return outlier_row(call.call)
        except Exception as e:  # nanprobe's own failure: never the run's
            if len(self.signals.errors) < 3:
                self.signals.errors.append(f"the outlier row of step {self._step}'s batch: {type(e).__name__}: {e}")
            return None

    def _broke(self) -> None:
        """The last optimizer step wrote NaN/Inf into the parameters (its update ratio says so): the first sign
        of trouble when nothing was reported yet, e.g. weights a saturating activation keeps from reaching the
        output, or embedding rows the next batches do not use. Reported as a "parameters" failure."""
        if self.failures or self._pending:
            return
        check = check_parameters(_unwrap(self.model))
        if check.nonfinite:
            self._found(Detected("parameters", check, self._last))

    def _on_warning(self, warning: EarlyWarning) -> None:
        text = f"nanprobe early warning at step {warning.step}: {warning.message}"
        policy = self.settings.on_warning
        if policy is Policy.RAISE:
            raise GrowthError(text)
        if policy is Policy.DUMP:
            where = Position(step=warning.step, epoch=self.epoch, rank=self.rank, world_size=self.world_size,
                             ranks=[self.rank])
            handle_warning(self.settings.handling, target=_unwrap(self.model), where=where, warning=warning,
                           history=self.history.tail(), layers=self._layers(), call=self._last)
        warnings.warn(text, GrowthWarning, stacklevel=4)

    @contextmanager
    def _rerunning(self) -> Iterator[None]:
        """While nanprobe re-runs the model itself: its own calls unwatched, eagerly (also a module compiled in
        place with ``module.compile()``), in the autocast region the call ran in (the replays vary it), with the
        framework's contexts entered."""
        compiled = [(m, m._compiled_call_impl) for m in _unwrap(self.model).modules()
                    if getattr(m, "_compiled_call_impl", None) is not None]
        with self._watcher.paused(), ExitStack() as stack:
            for make in self._rerun:
                stack.enter_context(make())
            for device, dtype in self._autocast:  # a gradient check runs outside the call's autocast region
                if (device, dtype) not in _autocast_regions():
                    stack.enter_context(torch.autocast(device, dtype=dtype))
            try:
                for m, _ in compiled:
                    m._compiled_call_impl = None
                yield
            finally:
                for m, impl in compiled:
                    m._compiled_call_impl = impl

    def _layers(self) -> list[Any]:
        return list(self.layer_history[-1]["layers"]) if self.layer_history else []

    def _found(self, pending: Detected, *, local: bool = False) -> None:
        """A local non-finite value: handled now (one process, or ``local``) or at the next agreement point."""
        if self.sync is None or local:
            self._handle([pending], [self.rank])
        elif not self._pending:
            self._pending.append(pending)

    def _exchange(self, bad: torch.Tensor | None, event: CallEvent | None = None,
                  record: StepCall | None = None) -> None:
        assert self.sync is not None
        local: bool | torch.Tensor = bool(self._pending)
        if bad is not None and not self._pending:
            local = bad
        ranks = self.sync.exchange(local)
        if not ranks:
            return
        pending = list(self._pending)
        self._pending.clear()
        if self.rank in ranks and not pending and event is not None:
            pending = [Detected("forward", check_finite(event.output, batch_size=batch_size(event.call)), record)]
        self._handle(pending, ranks)

    def _handle(self, pending: list[Detected], ranks: list[int]) -> None:
        self.nonfinite_steps += 1
        first = pending[0] if pending else None
        step = first.call.step if first is not None and first.call is not None else self._step
        where = Position(step=step, epoch=self.epoch, rank=self.rank, world_size=self.world_size, ranks=ranks)
        failure = handle_failure(self.settings.handling, target=_unwrap(self.model), where=where, detected=first,
                                 history=self.history.tail(), layers=self._layers(), bundles_written=len(self.bundles),
                                 paused=self._rerunning, layer_history=list(self.layer_history),
                                 param_history=self.param_history, compiled=self._compiled,
                                 dtype=str(self._dtype).removeprefix("torch.") if self._dtype is not None else None,
                                 autocast=tuple(f"{d}:{str(t).removeprefix('torch.')}" for d, t in self._autocast),
                                 optimizer=self.signals.optimizer, warnings=self.warnings)
        if len(self.failures) < max(self.settings.handling.max_bundles, 1) * 4:
            self.failures.append(failure)
        policy = self.settings.on_nonfinite
        if policy is Policy.RAISE:
            if self._framework:
                self.stop()
            raise NonFiniteError(failure.message, failure.diagnosis) from failure.internal_error
        if failure.internal_error is not None and not self._warned_internal:
            self._warned_internal = True  # one warning: the run goes on, the bundle says what went wrong
            warnings.warn(f"nanprobe could not finish handling a non-finite step (the run goes on): "
                          f"{failure.message}", NonFiniteWarning, stacklevel=3)
            return
        if policy is Policy.WARN:
            warnings.warn(failure.message, NonFiniteWarning, stacklevel=3)

    def _sample(self, record: StepCall) -> None:
        snapshot = layer_snapshot(_unwrap(self.model), record, self._rerunning)
        if snapshot is not None:
            rows, peak = snapshot
            self.layer_history.append({"step": record.step, "layers": rows})
            if peak is not None:  # given by _early, with the step's other warnings and under the same policy
                self._queued_warnings += self.watch.layer_headroom(record.step, peak)


_EAGER = ("_on_call", "_handle", "_on_warning")  # what may be reached from code that torch.compile compiles


_NONFINITE_TEXT = ("nan", "inf", "-inf")  # how a JSON-ready history row holds a non-finite float


def _finite(value: float) -> bool:
    return value == value and value not in (float("inf"), float("-inf"))


def _autocast_regions() -> tuple[tuple[str, torch.dtype], ...]:
    """The devices autocast is on for now, with their dtypes (e.g. a framework's mixed-precision forward)."""
    found = []
    for device in ("cpu", "cuda"):
        try:
            if torch.is_autocast_enabled(device):
                found.append((device, torch.get_autocast_dtype(device)))
        except (TypeError, AttributeError, RuntimeError):  # torch < 2.4 names them per device
            pass
    return tuple(found)


def _is_compiled(model: nn.Module) -> bool:
    return type(model).__name__ == "OptimizedModule" or getattr(model, "_compiled_call_impl", None) is not None


def _unwrap(model: nn.Module) -> nn.Module:
    """The module a diagnosis may re-run on its own, eagerly and under its own names: DDP/DataParallel wrappers
    run collectives in forward, and a ``torch.compile`` wrapper prefixes every name with ``_orig_mod.``."""
    while True:
        kind = type(model).__name__
        inner = getattr(model, "_orig_mod" if kind == "OptimizedModule" else "module", None)
        if not isinstance(inner, nn.Module) or kind not in ("DistributedDataParallel", "DataParallel",
                                                            "OptimizedModule"):
            return model
        model = inner


def monitor(
    model: nn.Module,
    out_dir: str | Path = "nanprobe-bundles",
    *,
    on_nonfinite: str = "raise",
    depth: str = "sentinel",
    every: int = 100,
    diagnose: bool = True,
    time_budget: float | None = 5.0,
    save_model: str = "state",
    checkpoint: str | Path | None = None,
    factory: str | None = None,
    config: Mapping[str, Any] | None = None,
    run_config: Mapping[str, Any] | None = None,
    run_name: str | None = None,
    history: int = 200,
    optimizer: Any | None = None,
    scaler: Any | None = None,
    on_warning: str = "warn",
    warn_fraction: float = 0.1,
    distributed: bool | None = None,
    group: Any | None = None,
    max_bundles: int = 1,
    methods: Sequence[str] = (),
    mode: str | None = None,
) -> Monitor:
    """Watch ``model`` and leave a post-mortem bundle in ``out_dir`` at the first non-finite step.

    on_nonfinite: "raise" (NonFiniteError after the bundle is written), "dump" (write it and go on), "warn"
      (write it and warn). depth: "sentinel" (cheap) or "full" (per-layer stats every ``every`` steps).
    time_budget: in "dump"/"warn" mode, the seconds a diagnosis may hold the failing step up (at least four
      forward passes of the model); what it did not finish is left to ``nanprobe replay`` and the bundle says
      so. None: no limit. In "raise" mode the run stops anyway and the diagnosis runs to its end.
    save_model: "state" (model.pt with the state dict, plus ``factory``/``config`` so it can be rebuilt;
      without a factory the whole module is pickled and replay needs --trust-pickle), "reference" (point
      at ``checkpoint``), "none". ``run_config`` is the run's whole config (for the config audit).
    distributed: None = on when torch.distributed is initialised with more than one rank. Then the ranks agree
      with one all_reduce per step: at ``mon.step()`` once it is called, else at every grad-enabled model call
      (every rank must make the same number of them). No-grad (eval) calls are checked on their rank alone.
    methods: model methods other than ``forward`` that the loop calls directly (``("train_logits",)``); each
      call is watched like ``model(...)``, and a diagnosis re-runs that method.
    optimizer / scaler: record the learning rate and update ratio / the loss scale (``mon.attach(...)`` later
      for ones created afterwards). With a GradScaler, its deliberately skipped overflow steps are recorded,
      not reported.
    on_warning: what the early warning does when a signal grows towards overflow (sustained exponential
      growth of the gradient norm, loss, outputs or update ratio; outputs above ``warn_fraction`` of their
      dtype's max; a loss scale that keeps falling): "warn" (default), "dump" (a bundle, early), "raise"
      (nanprobe.errors.GrowthError).
    mode: the old name of ``depth`` (deprecated: "mode" means train/eval everywhere else in nanprobe).
    """
    if mode is not None:
        warnings.warn("monitor(mode=...) is now monitor(depth=...): 'mode' means train/eval elsewhere",
                      DeprecationWarning, stacklevel=2)
        depth = mode
    try:
        policy = Policy(on_nonfinite)
    except ValueError:
        raise InputError(f"on_nonfinite must be 'raise', 'dump' or 'warn', not {on_nonfinite!r}") from None
    try:
        warn_policy = Policy(on_warning)
    except ValueError:
        raise InputError(f"on_warning must be 'warn', 'dump' or 'raise', not {on_warning!r}") from None
    try:
        how_deep = Depth(depth)
    except ValueError:
        raise InputError(f"depth (formerly mode) must be 'sentinel' or 'full', not {depth!r}") from None
    if save_model not in ("state", "reference", "none"):
        raise InputError(f"save_model must be 'state', 'reference' or 'none', not {save_model!r}")
    if save_model == "reference" and checkpoint is None:
        raise InputError("save_model='reference' needs checkpoint= (the path of the model's checkpoint)")
    if every < 1:
        raise InputError(f"every must be >= 1, not {every}")
    if time_budget is not None and time_budget < 0:
        raise InputError(f"time_budget must be None or >= 0 seconds, not {time_budget}")
    if not isinstance(model, nn.Module):
        raise InputError(f"monitor() takes an nn.Module, not {type(model).__name__}")
    name = run_name or type(_unwrap(model)).__name__.lower()
    source = ModelSource(how=save_model, factory=factory, config=dict(config) if config is not None else None,
                         run_config=dict(run_config) if run_config is not None else None,
                         checkpoint=str(checkpoint) if checkpoint is not None else None, strip=tuple(methods))
    handling = Handling(out_dir=Path(out_dir), policy=policy, depth=how_deep, diagnose=diagnose,
                        time_budget=time_budget, source=source, run_name=name, max_bundles=max_bundles)
    settings = MonitorSettings(handling=handling, every=every, history=history, methods=tuple(methods),
                               on_warning=warn_policy, warn_fraction=warn_fraction)
    return Monitor(model, settings, optimizer=optimizer, scaler=scaler, distributed=distributed, group=group)
