"""Trainer callbacks: the seam where outside tools (e.g. nanprobe's monitor) attach to training and eval.

Subclass :class:`Callback` and override what you need; pass instances to ``Trainer(callbacks=[...])``.
``context(trainer, phase)`` returns a context manager entered around every training epoch
(phase="train") and every evaluation (phase="eval"), e.g. ``nanprobe.monitor(trainer.model, ...)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from .metrics import EvalResult

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["Callback", "CallbackList"]

Batch = dict[str, torch.Tensor]


class Callback:
    def context(self, trainer: Trainer, phase: str) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def on_stage_start(self, trainer: Trainer, stage: str) -> None: ...

    def on_stage_end(self, trainer: Trainer, stage: str, best_metric: float) -> None: ...

    def on_train_step(self, trainer: Trainer, stage: str, step: int, batch: Batch, loss: torch.Tensor) -> None: ...

    def on_eval_batch(self, trainer: Trainer, split: str, index: int, batch: Batch, scores: torch.Tensor,
                      nonfinite: torch.Tensor) -> None: ...

    def on_eval_end(self, trainer: Trainer, split: str, result: EvalResult) -> None: ...


class CallbackList(Callback):
    def __init__(self, callbacks: list[Callback] | None = None) -> None:
        self.callbacks = list(callbacks or [])

    @contextlib.contextmanager
    def _stack(self, trainer: Trainer, phase: str) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for cb in self.callbacks:
                stack.enter_context(cb.context(trainer, phase))
            yield

    def context(self, trainer: Trainer, phase: str) -> contextlib.AbstractContextManager[Any]:
        return self._stack(trainer, phase)

    def on_stage_start(self, trainer: Trainer, stage: str) -> None:
        for cb in self.callbacks:
            cb.on_stage_start(trainer, stage)

    def on_stage_end(self, trainer: Trainer, stage: str, best_metric: float) -> None:
        for cb in self.callbacks:
            cb.on_stage_end(trainer, stage, best_metric)

    def on_train_step(self, trainer: Trainer, stage: str, step: int, batch: Batch, loss: torch.Tensor) -> None:
        for cb in self.callbacks:
            cb.on_train_step(trainer, stage, step, batch, loss)

    def on_eval_batch(self, trainer: Trainer, split: str, index: int, batch: Batch, scores: torch.Tensor,
                      nonfinite: torch.Tensor) -> None:
        for cb in self.callbacks:
            cb.on_eval_batch(trainer, split, index, batch, scores, nonfinite)

    def on_eval_end(self, trainer: Trainer, split: str, result: EvalResult) -> None:
        for cb in self.callbacks:
            cb.on_eval_end(trainer, split, result)
