"""PyTorch Lightning glue: ``NanprobeCallback``, one line in the Trainer.

    trainer = Trainer(..., callbacks=[NanprobeCallback("nan-bundles")])   # on_nonfinite="raise" by default

A Lightning trainer calls ``training_step``/``validation_step`` on the LightningModule, and ``forward`` may
never run (``self.net(x)`` inside the step): the callback watches those methods (the ones the module
overrides), so a NaN anywhere in the step, loss included, is seen, localized under the module's own names
and re-run by the diagnosis. It checks the gradients at ``on_before_optimizer_step`` (after Lightning
unscaled them under 16-bit AMP), records the loss, the learning rate of ``trainer.optimizers[0]`` and the
GradScaler of ``trainer.precision_plugin`` (its skipped overflow steps are recorded, not reported), and
keeps the monitor's step equal to ``trainer.global_step``.

With manual optimization ``training_step`` steps the optimizers itself, so it is never re-run: the callback
watches ``forward`` (``self(x)``), or the side-effect-free methods you name with ``methods=``.

Lightning is imported when ``NanprobeCallback`` is first used (``lightning.pytorch``, else
``pytorch_lightning``); Lightning calls a callback's hooks by name, so it serves either Trainer.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nanprobe.integrations._glue import CallbackMonitor
from nanprobe.watch import CallEvent

__all__ = ["NanprobeCallback"]

if TYPE_CHECKING:
    NanprobeCallback: type  # defined on first use (module __getattr__), when the framework is imported

STEP_METHODS = ("training_step", "validation_step")


def _lightning() -> Any:
    try:
        import lightning.pytorch as pl
    except ImportError:
        try:
            import pytorch_lightning as pl
        except ImportError as e:
            raise ImportError("nanprobe.integrations.lightning needs Lightning: pip install lightning") from e
    return pl


def _step_methods(module: Any, requested: Sequence[str] | None) -> tuple[str, ...]:
    if requested is not None:
        return tuple(requested)
    if not getattr(module, "automatic_optimization", True):
        return ()  # training_step steps the optimizers itself: never re-run it
    base = type(module).__mro__  # the methods the user's class defines, not LightningModule's stubs
    owner = {name: next((c for c in base if name in c.__dict__), None) for name in STEP_METHODS}
    return tuple(name for name, cls in owner.items()
                 if cls is not None and not cls.__module__.startswith(("lightning.", "pytorch_lightning.")))


def _step_loss(event: CallEvent) -> Any:
    """The loss ``training_step`` returned (a tensor, or the ``"loss"`` of a dict)."""
    if event.name != "training_step":
        return None
    out = event.output
    if isinstance(out, Mapping):
        out = out.get("loss")
    return out if isinstance(out, torch.Tensor) else None


@contextmanager
def _quiet(module: nn.Module) -> Iterator[None]:
    """While nanprobe re-runs a step: ``self.log``/``self.log_dict`` do nothing, and torchmetrics' running
    states (plain attributes, not buffers) come back as they were, so the run's metrics are untouched."""
    saved_attrs = {name: module.__dict__[name] for name in ("log", "log_dict") if name in module.__dict__}
    metrics = _metric_states(module)
    object.__setattr__(module, "log", _no_log)
    object.__setattr__(module, "log_dict", _no_log)
    try:
        yield
    finally:
        for name in ("log", "log_dict"):
            module.__dict__.pop(name, None)
        module.__dict__.update(saved_attrs)
        for metric, state in metrics:
            metric.__dict__.update(state)


def _no_log(*args: Any, **kwargs: Any) -> None:
    return None


def _metric_states(module: nn.Module) -> list[tuple[nn.Module, dict[str, Any]]]:
    tm = sys.modules.get("torchmetrics")
    if tm is None:
        return []
    found = []
    for m in module.modules():
        if isinstance(m, tm.Metric):
            names = [*getattr(m, "_defaults", {}), "_update_count", "_computed", "_forward_cache"]
            found.append((m, {n: copy.deepcopy(m.__dict__[n]) for n in names if n in m.__dict__}))
    return found


def _define() -> type:
    pl = _lightning()

    class NanprobeCallback(pl.Callback):
        """Watch a Lightning fit with nanprobe's monitor; a post-mortem bundle at the first non-finite step.

        ``out_dir`` and ``monitor_kwargs`` are :func:`nanprobe.monitor`'s (``on_nonfinite="raise"`` stops the
        fit with :class:`nanprobe.NonFiniteError`; ``"dump"``/``"warn"`` go on). ``methods``: the
        LightningModule's methods to watch (default: ``training_step`` and ``validation_step`` where the
        module defines them; none under manual optimization). After the fit, ``callback.monitor`` holds
        the history, the bundles and the failures."""

        def __init__(self, out_dir: str | Path = "nanprobe-bundles", *, methods: Sequence[str] | None = None,
                     **monitor_kwargs: Any) -> None:
            super().__init__()
            self._glue = CallbackMonitor(out_dir, monitor_kwargs)
            self._methods = methods

        @property
        def monitor(self) -> Any:
            return self._glue.monitor

        def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
            self._glue.start(pl_module, step=trainer.global_step, methods=_step_methods(pl_module, self._methods),
                             loss_of=_step_loss, rerun=lambda: _quiet(pl_module), epoch=trainer.current_epoch)
            self._attach(trainer)

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            self._attach(trainer)

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            if self._glue.monitor is not None:
                self._glue.monitor.set_epoch(trainer.current_epoch)

        def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
            self._glue.check_gradients(pl_module)

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
                               ) -> None:
            self._glue.end_step(trainer.global_step, trainer.current_epoch)

        def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
            self._glue.stop()

        def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
            self._glue.stop()

        def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
            self._glue.stop()

        def _attach(self, trainer: Any) -> None:
            optimizers = list(getattr(trainer, "optimizers", None) or [])
            scaler = getattr(trainer.precision_plugin, "scaler", None)
            self._glue.attach(optimizers[0] if optimizers else None, scaler)

    NanprobeCallback.__module__ = __name__
    return NanprobeCallback


def __getattr__(name: str) -> Any:
    if name == "NanprobeCallback":
        cls = _define()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
