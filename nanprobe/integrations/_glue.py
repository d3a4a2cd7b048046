"""What every framework callback does with a monitor, whatever the framework: start it on the module the
framework really calls, hand it the framework's step count, optimizer and GradScaler, take the loss from the
watched calls, advance at the framework's step end, stop it at the end (or when it raises).

``lightning.py`` and ``transformers.py`` map their framework's hooks onto a :class:`CallbackMonitor`; nothing
here imports a framework.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nanprobe.monitoring import Monitor, monitor
from nanprobe.monitoring.history import scalar
from nanprobe.watch import CallEvent

__all__ = ["CallbackMonitor", "after_each_backward", "real_optimizer"]

LossOf = Callable[[CallEvent], Any]


def real_optimizer(optimizer: Any) -> Any:
    """The torch optimizer inside a framework's wrapper (accelerate's ``AcceleratedOptimizer`` keeps it in
    ``.optimizer`` and steps it; hooks registered on the wrapper itself would never fire)."""
    for _ in range(8):
        inner = getattr(optimizer, "optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer):
            break
        optimizer = inner
    return optimizer


def after_each_backward(model: nn.Module, fn: Callable[[], None]) -> Callable[[], None]:
    """Call ``fn()`` at the end of every backward pass that reaches ``model``'s parameters, once their ``.grad``
    is final (before any clipping or unscaling that follows ``backward()``); returns the undo.

    Per-parameter gradient hooks (never module hooks, so fast paths stay on) queue one callback on the autograd
    engine, which runs it when the whole backward pass is done."""
    queued = False

    def done() -> None:
        nonlocal queued
        queued = False
        fn()

    def reached(_: torch.Tensor) -> None:
        nonlocal queued
        if not queued:
            queued = True
            torch.autograd.Variable._execution_engine.queue_callback(done)  # type: ignore[attr-defined]

    handles = [p.register_post_accumulate_grad_hook(reached) for p in model.parameters() if p.requires_grad]

    def undo() -> None:
        for handle in handles:
            handle.remove()

    return undo


class CallbackMonitor:
    """The monitor a callback owns: created at the start of training, stopped at its end.

    ``monitor_kwargs`` are :func:`nanprobe.monitor`'s keyword arguments (``on_nonfinite``, ``depth``,
    ``history``, ...), passed through unchanged."""

    def __init__(self, out_dir: str | Path, monitor_kwargs: dict[str, Any]) -> None:
        for key in ("optimizer", "scaler", "methods"):
            if key in monitor_kwargs:
                raise TypeError(f"the callback sets monitor({key}=...) itself (from the framework's own)")
        self.out_dir = out_dir
        self.kwargs = monitor_kwargs
        self.monitor: Monitor | None = None
        self._loss_of: LossOf | None = None
        self._losses: tuple[int, float, int] = (-1, 0.0, 0)  # (step, sum, count) of this step's losses
        self._active = False
        self._release: list[Callable[[], None]] = []

    def start(self, model: nn.Module, *, step: int, methods: Sequence[str] = (), loss_of: LossOf | None = None,
              rerun: Callable[[], AbstractContextManager[Any]] | None = None, optimizer: Any = None,
              scaler: Any = None, epoch: int | None = None) -> Monitor:
        """Watch ``model`` (its ``methods`` too) from the framework's global ``step`` on."""
        self.stop()
        mon = monitor(model, self.out_dir, methods=tuple(methods), **self.kwargs)
        mon.start()
        mon.attach_framework(step, on_call=self._on_call, rerun=rerun, on_stop=self._stopped)
        if epoch is not None:
            mon.set_epoch(epoch)
        self.monitor, self._loss_of, self._active = mon, loss_of, True
        self.attach(optimizer, scaler)
        return mon

    def attach(self, optimizer: Any = None, scaler: Any = None) -> None:
        """The real optimizer (learning rate, update ratio) and the GradScaler, found through a wrapper."""
        if self.monitor is None:
            return
        if scaler is None:
            scaler = getattr(optimizer, "scaler", None)  # accelerate's AcceleratedOptimizer holds its scaler
        self.monitor.attach(real_optimizer(optimizer) if optimizer is not None else None, scaler)

    def end_step(self, global_step: int, epoch: int | None = None) -> None:
        """The framework finished a step and its global step is now ``global_step`` (every rank calls this)."""
        mon = self.monitor
        if mon is None or not self._active:
            return
        if mon.current_step < global_step:
            mon.step(epoch=epoch)
        if mon.current_step != global_step:  # the framework counts differently (e.g. resumed): follow it
            mon.attach_framework(global_step)

    def check_gradients(self, model: nn.Module) -> None:
        """``after_backward``, unless this step already failed (NaN outputs give NaN gradients: one failure)."""
        mon = self.monitor
        if mon is None or not self._active or (mon.failures and mon.failures[-1].step == mon.current_step):
            return
        mon.after_backward(model)

    def check_gradients_after_backward(self, model: nn.Module) -> None:
        """Check ``model``'s gradients at the end of every backward pass (before a framework clips them)."""
        self._release.append(after_each_backward(model, lambda: self.check_gradients(model)))

    def stop(self) -> None:
        """Idempotent. The monitor also stops itself before it raises a NonFiniteError; :meth:`_stopped`
        runs either way and releases what the callback added."""
        if self._active and self.monitor is not None:
            self.monitor.stop()

    def _stopped(self) -> None:
        self._active = False
        release, self._release = self._release, []
        for undo in release:
            undo()

    # -- the loss ------------------------------------------------------------------------------------
    def logged_loss(self, step: int, value: Any) -> None:
        """A loss the framework logged for ``step`` (already finished: frameworks log after the step end),
        recorded at that step when the calls themselves gave none."""
        mon = self.monitor
        if mon is None or value is None or self._losses[0] == step or step < 0:
            return
        mon.history.log(step, {"loss": value})  # merged into that step's record

    def _on_call(self, event: CallEvent) -> None:
        """A training call's loss, averaged over the step's calls (gradient accumulation), in the history."""
        if self._loss_of is None or self.monitor is None or not (event.training and event.grad_enabled):
            return
        value = scalar(self._loss_of(event))
        if value is None:
            return
        step, total, count = self._losses
        if step != self.monitor.current_step:
            step, total, count = self.monitor.current_step, 0.0, 0
        self._losses = (step, total + value, count + 1)
        self.monitor.log(loss=(total + value) / (count + 1))
