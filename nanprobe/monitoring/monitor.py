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

import warnings
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nanprobe.batches import ModelCall, batch_size
from nanprobe.errors import InputError, NonFiniteError
from nanprobe.execution import mode_of
from nanprobe.monitoring.distributed import RankSync, rank_and_world
from nanprobe.monitoring.failure import Failure, Handling, Position, handle_failure
from nanprobe.monitoring.history import History, scalar
from nanprobe.monitoring.methods import patch_method
from nanprobe.monitoring.snapshots import layer_snapshot
from nanprobe.monitoring.step import Depth, Detected, Policy, StepCall
from nanprobe.postmortem.assemble import ModelSource
from nanprobe.rng import RNGState
from nanprobe.sentinel import CLEAN, FiniteCheck, check_finite, check_gradients, tensor_leaves
from nanprobe.watch import CallEvent, Watcher

__all__ = ["Depth", "Monitor", "MonitorSettings", "NonFiniteWarning", "Policy", "monitor"]


class NonFiniteWarning(RuntimeWarning):
    """Issued by ``on_nonfinite="warn"`` after the bundle is written, and in ``dump``/``warn`` mode when
    nanprobe itself failed while handling a non-finite step (the run goes on)."""


@dataclass
class MonitorSettings:
    """Everything :func:`monitor` was given, validated."""

    handling: Handling
    every: int = 100
    history: int = 200
    layer_snapshots: int = 8
    methods: tuple[str, ...] = ()

    @property
    def depth(self) -> Depth:
        return self.handling.depth

    @property
    def on_nonfinite(self) -> Policy:
        return self.handling.policy


class Monitor:
    """Created by :func:`monitor`; use it as a context manager (or :meth:`start` / :meth:`stop`)."""

    def __init__(self, model: nn.Module, settings: MonitorSettings, *, optimizer: Any | None = None,
                 distributed: bool | None = None, group: Any | None = None) -> None:
        self.model = model
        self.settings = settings
        self.optimizer = optimizer
        self._distributed = distributed
        self._group = group
        self.sync: RankSync | None = None
        self.rank, self.world_size = rank_and_world()
        self.history = History(settings.history)
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
        self._watcher = Watcher(self._on_call, capture_rng=True, check_outputs=False)
        self._undo: list[Callable[[], None]] = []

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> Monitor:
        self.sync = RankSync.detect(self._distributed, self._group)
        if self.sync is not None:
            self.rank, self.world_size = self.sync.rank, self.sync.world_size
        self._watcher.watch(self.model, type(self.model).__name__)
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
        self._last = None
        self._pending.clear()

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
    def bundles(self) -> list[Path]:
        return [f.bundle for f in self.failures if f.bundle is not None]

    def step(self, epoch: int | None = None) -> None:
        """Mark the end of a training step (optional: without it every top-level model call is one step).
        Under torch.distributed this is where the ranks agree (every rank must call it)."""
        self._manual = True
        if self.sync is not None:
            self._exchange(None)
        self._advance()
        if epoch is not None:
            self.epoch = epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

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
        self.history.log(self._step, {"loss": value})
        if value is not None and not _finite(value):
            kind = "nan" if value != value else "inf"
            self._found(Detected("loss", FiniteCheck(True, kind, ("loss",), ()), self._last))
        return loss

    def after_backward(self, model: nn.Module | None = None) -> float | None:
        """Check every parameter's gradient after ``backward()`` (before the optimizer step) and log the
        global grad norm, which it returns. One host read."""
        target = _unwrap(model if model is not None else self.model)
        grads = [p.grad.detach() for p in target.parameters() if p.grad is not None]
        if not grads:
            return None
        norms = torch.stack([torch.linalg.vector_norm(g.float()).to(grads[0].device) for g in grads])
        finite = torch.stack([torch.isfinite(g).all().to(grads[0].device) for g in grads]).all()
        total, ok = torch.stack([torch.linalg.vector_norm(norms), finite.float()]).tolist()
        self._log_lr()
        self.history.log(self._step, {"grad_norm": total})
        if not ok:
            self._found(Detected("backward", check_gradients(target), self._last))
        return total

    # -- the hook --------------------------------------------------------------------------------
    def _wrap(self, fn: Callable[..., Any], method: str) -> Callable[..., Any]:
        """What the watcher does for ``forward``, for a method: RNG before, arguments and check after."""

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
        if not self._manual and self.calls > 0:
            self._advance()
        self.calls += 1
        record = StepCall(self._step, self.epoch, event.call, event.rng, mode_of(event.training),
                          event.grad_enabled, method)
        self._last = record
        bad = _nonfinite_flag(event.output)
        if self.settings.depth is Depth.FULL and self._step % self.settings.every == 0:
            self._sample(record)
        if self.sync is not None and not self._manual and event.grad_enabled:
            self._exchange(bad, event, record)
            return
        if bad is not None and bool(bad):
            check = check_finite(event.output, batch_size=batch_size(event.call))
            # a no-grad (eval) call is never a collective point: ranks may run different numbers of them
            self._found(Detected("forward", check, record), local=not event.grad_enabled)

    # -- internals -------------------------------------------------------------------------------
    def _advance(self) -> None:
        self._log_lr()
        self._step += 1

    def _log_lr(self) -> None:
        if self.optimizer is not None and getattr(self.optimizer, "param_groups", None):
            self.history.log(self._step, {"lr": self.optimizer.param_groups[0].get("lr")})

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
        layers = list(self.layer_history[-1]["layers"]) if self.layer_history else []
        failure = handle_failure(self.settings.handling, target=_unwrap(self.model), where=where, detected=first,
                                 history=self.history.tail(), layers=layers, bundles_written=len(self.bundles),
                                 paused=self._watcher.paused)
        if len(self.failures) < max(self.settings.handling.max_bundles, 1) * 4:
            self.failures.append(failure)
        policy = self.settings.on_nonfinite
        if policy is Policy.RAISE:
            raise NonFiniteError(failure.message, failure.diagnosis) from failure.internal_error
        if failure.internal_error is not None and not self._warned_internal:
            self._warned_internal = True  # one warning: the run goes on, the bundle says what went wrong
            warnings.warn(f"nanprobe could not finish handling a non-finite step (the run goes on): "
                          f"{failure.message}", NonFiniteWarning, stacklevel=3)
            return
        if policy is Policy.WARN:
            warnings.warn(failure.message, NonFiniteWarning, stacklevel=3)

    def _sample(self, record: StepCall) -> None:
        rows = layer_snapshot(_unwrap(self.model), record, self._watcher.paused)
        if rows is not None:
            self.layer_history.append({"step": record.step, "layers": rows})


def _finite(value: float) -> bool:
    return value == value and value not in (float("inf"), float("-inf"))


def _unwrap(model: nn.Module) -> nn.Module:
    """The module a diagnosis may re-run on its own: DDP/DataParallel wrappers run collectives in forward."""
    inner = getattr(model, "module", None)
    if isinstance(inner, nn.Module) and type(model).__name__ in ("DistributedDataParallel", "DataParallel"):
        return inner
    return model


def _nonfinite_flag(output: Any) -> torch.Tensor | None:
    """A 0-dim bool tensor (on the output's device, not read back): True when any output is NaN/Inf."""
    leaves = [t for _, t in tensor_leaves(output) if t.numel()]
    if not leaves:
        return None
    device = leaves[0].device
    flags = [torch.isfinite(t.detach()).all().to(device) for t in leaves]
    return ~(flags[0] if len(flags) == 1 else torch.stack(flags).all())


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
    settings = MonitorSettings(handling=handling, every=every, history=history, methods=tuple(methods))
    return Monitor(model, settings, optimizer=optimizer, distributed=distributed, group=group)
