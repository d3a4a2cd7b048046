"""Hugging Face ``Trainer`` glue: ``NanprobeCallback``, one line in the Trainer.

    trainer = Trainer(model, args, ..., callbacks=[NanprobeCallback("nan-bundles")])   # on_nonfinite="raise"

The callback starts the monitor at ``on_train_begin`` on the model the trainer calls (``trainer.model``;
under DDP or ``torch.compile`` the wrapper calls it), with the real optimizer inside accelerate's wrapper
(learning rate, update ratio) and its GradScaler under fp16 (skipped overflow steps are recorded, not
reported). The loss of each step comes from the model's own output (``outputs.loss``, averaged over
gradient-accumulation micro-batches) at the step it belongs to; when the model returns none, the loss of
``on_log`` is recorded at the step it was computed for. Gradients are checked at the end of each backward
pass, before the Trainer clips them (no callback event comes between the two: a clipped norm would hide
their growth), and the monitor's step is ``state.global_step``.

transformers is imported when ``NanprobeCallback`` is first used. (Loading Hugging Face checkpoints is
``nanprobe.integrations.hf_checkpoints``.)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nanprobe.integrations._glue import CallbackMonitor
from nanprobe.watch import CallEvent

__all__ = ["NanprobeCallback"]

if TYPE_CHECKING:
    NanprobeCallback: type  # defined on first use (module __getattr__), when the framework is imported


def _output_loss(event: CallEvent) -> Any:
    """``outputs.loss`` of a Hugging Face model (a ``ModelOutput`` is a Mapping), when it returned one."""
    out = event.output
    loss = out.get("loss") if isinstance(out, Mapping) else getattr(out, "loss", None)
    return loss if isinstance(loss, torch.Tensor) else None


def _define() -> type:
    try:
        from transformers import TrainerCallback
    except ImportError as e:
        raise ImportError("nanprobe.integrations.transformers.NanprobeCallback needs transformers: "
                          "pip install transformers") from e

    class NanprobeCallback(TrainerCallback):
        """Watch ``Trainer.train()`` with nanprobe's monitor; a post-mortem bundle at the first non-finite step.

        ``out_dir`` and ``monitor_kwargs`` are :func:`nanprobe.monitor`'s (``on_nonfinite="raise"`` stops
        ``train()`` with :class:`nanprobe.NonFiniteError`; ``"dump"``/``"warn"`` go on). After training,
        ``callback.monitor`` holds the history, the bundles and the failures."""

        def __init__(self, out_dir: str | Path = "nanprobe-bundles", **monitor_kwargs: Any) -> None:
            self._glue = CallbackMonitor(out_dir, monitor_kwargs)

        @property
        def monitor(self) -> Any:
            return self._glue.monitor

        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None,
                           **kwargs: Any) -> None:
            if model is None:
                return
            self._glue.start(model, step=state.global_step, loss_of=_output_loss, optimizer=optimizer,
                             epoch=int(state.epoch or 0))
            self._glue.check_gradients_after_backward(model)

        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self._glue.monitor is not None:
                self._glue.monitor.set_epoch(round(state.epoch or 0))

        def on_step_begin(self, args: Any, state: Any, control: Any, optimizer: Any = None, **kwargs: Any
                          ) -> None:
            mon = self._glue.monitor
            if mon is not None and optimizer is not None and mon.optimizer is None:
                self._glue.attach(optimizer)  # created late (e.g. a custom create_optimizer)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._glue.end_step(state.global_step)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            self._glue.logged_loss(state.global_step - 1, (logs or {}).get("loss"))

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._glue.stop()

    NanprobeCallback.__module__ = __name__
    return NanprobeCallback


def __getattr__(name: str) -> Any:
    if name == "NanprobeCallback":
        cls = _define()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
