"""Trainer callbacks: the seam where outside tools (e.g. nanprobe's monitor) attach to training and eval.

Subclass :class:`Callback` and override what you need; pass instances to ``Trainer(callbacks=[...])``: the
trainer runs exactly the callbacks its caller gives it (``python -m ur4rec.train`` passes nanprobe's monitor).
``context(trainer, phase)`` returns a context manager entered around every training epoch
(phase="train") and every evaluation (phase="eval"), e.g. ``nanprobe.monitor(trainer.model, ...)``.

Callbacks see the trainer through :class:`TrainerView` (what they may read), so this module does not depend on
the trainer that calls it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from .config import RunConfig
    from .metrics import EvalResult
    from .model import UR4RecV2MoE

__all__ = ["Callback", "CallbackList", "TrainerView", "TrainingProgress"]

Batch = dict[str, torch.Tensor]


class TrainingProgress(Protocol):
    @property
    def epoch(self) -> int: ...  # epochs completed in the current stage

    @property
    def global_step(self) -> int: ...


class TrainerView(Protocol):
    """What a callback may read from the trainer that calls it (:class:`ur4rec.trainer.Trainer` is one)."""

    @property
    def model(self) -> UR4RecV2MoE: ...

    @property
    def cfg(self) -> RunConfig: ...

    @property
    def optimizer(self) -> torch.optim.Optimizer | None: ...

    @property
    def stage(self) -> str | None: ...  # the stage being trained

    @property
    def eval_split(self) -> str | None: ...  # the split being evaluated ("val" / "test")

    @property
    def state(self) -> TrainingProgress: ...


class Callback:
    def context(self, trainer: TrainerView, phase: str) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def on_stage_start(self, trainer: TrainerView, stage: str) -> None: ...

    def on_stage_end(self, trainer: TrainerView, stage: str, best_metric: float) -> None: ...

    def on_train_step(self, trainer: TrainerView, stage: str, step: int, batch: Batch, loss: torch.Tensor) -> None: ...

    def on_eval_batch(self, trainer: TrainerView, split: str, index: int, batch: Batch, scores: torch.Tensor,
                      nonfinite: torch.Tensor) -> None: ...

    def on_eval_end(self, trainer: TrainerView, split: str, result: EvalResult) -> None: ...

    def on_fit_end(self, trainer: TrainerView, metrics: dict[str, Any]) -> None:
        """After the final evaluation, before ``metrics`` is written (to best.pt and metrics.json): a callback
        may add its own entries."""


class CallbackList(Callback):
    def __init__(self, callbacks: list[Callback] | None = None) -> None:
        self.callbacks = list(callbacks or [])

    @contextlib.contextmanager
    def _stack(self, trainer: TrainerView, phase: str) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for cb in self.callbacks:
                stack.enter_context(cb.context(trainer, phase))
            yield

    def context(self, trainer: TrainerView, phase: str) -> contextlib.AbstractContextManager[Any]:
        return self._stack(trainer, phase)

    def on_stage_start(self, trainer: TrainerView, stage: str) -> None:
        for cb in self.callbacks:
            cb.on_stage_start(trainer, stage)

    def on_stage_end(self, trainer: TrainerView, stage: str, best_metric: float) -> None:
        for cb in self.callbacks:
            cb.on_stage_end(trainer, stage, best_metric)

    def on_train_step(self, trainer: TrainerView, stage: str, step: int, batch: Batch, loss: torch.Tensor) -> None:
        for cb in self.callbacks:
            cb.on_train_step(trainer, stage, step, batch, loss)

    def on_eval_batch(self, trainer: TrainerView, split: str, index: int, batch: Batch, scores: torch.Tensor,
                      nonfinite: torch.Tensor) -> None:
        for cb in self.callbacks:
            cb.on_eval_batch(trainer, split, index, batch, scores, nonfinite)

    def on_eval_end(self, trainer: TrainerView, split: str, result: EvalResult) -> None:
        for cb in self.callbacks:
            cb.on_eval_end(trainer, split, result)

    def on_fit_end(self, trainer: TrainerView, metrics: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_fit_end(trainer, metrics)
