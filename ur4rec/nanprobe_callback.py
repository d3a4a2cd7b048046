"""nanprobe's monitor as a ur4rec :class:`~ur4rec.callbacks.Callback` (``python -m ur4rec.train`` passes one to
the trainer unless ``--no-nanprobe``; the trainer itself knows nothing of nanprobe).

Training epochs run under ``nanprobe.monitor`` watching ``model.train_logits`` (a non-finite step raises, after a
post-mortem bundle is written); evaluations run under a monitor that dumps a bundle for the first non-finite
batch and lets the evaluation finish, so the evaluator still counts every non-finite batch and sample. Bundles
go to ``<output_dir>/nanprobe/`` and are diagnosed again with ``nanprobe replay BUNDLE``.

The monitor adds no per-module hook, so the model runs exactly the path it runs without it (the native MHA fast
path in eval included); a clean step costs one flag read back per model call.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

import nanprobe

from .callbacks import Callback, TrainerView

if TYPE_CHECKING:
    from nanprobe import Monitor

__all__ = ["FACTORY", "NanprobeCallback", "monitored_eval"]

FACTORY = "ur4rec.model:build_model"


@contextlib.contextmanager
def monitored_eval(model: nn.Module, out_dir: str | Path, *, split: str, config: Mapping[str, Any],
                   run_config: Mapping[str, Any] | None = None, bundles: list[Path] | None = None
                   ) -> Iterator[Monitor]:
    """Evaluate inside this: each ``model(**batch)`` is one step; the first non-finite one leaves a bundle
    (model rebuilt by ``ur4rec.model:build_model(**config)``), later ones are only counted by the evaluator.
    Paths of written bundles are appended to ``bundles``."""
    # time_budget=None: an evaluation is not a training step to keep moving; the bundle gets the whole diagnosis
    mon = nanprobe.monitor(model, out_dir=out_dir, on_nonfinite="dump", factory=FACTORY, config=dict(config),
                           run_config=dict(run_config) if run_config is not None else None,
                           run_name=f"eval-{split}", time_budget=None)
    try:
        with mon:
            yield mon
    finally:
        if bundles is not None:
            bundles.extend(mon.bundles)


class NanprobeCallback(Callback):
    """Monitor training (``on_nonfinite_train``, default "raise") and evaluation ("dump": keep evaluating).

    ``max_eval_bundles``: bundles per split (val, test) over the whole run; later evaluations of that split are
    not monitored (the evaluator still counts their non-finite samples), so a broken model does not pay for a
    diagnosis at every validation.
    """

    def __init__(self, out_dir: str | Path, *, train: bool = True, eval: bool = True,
                 on_nonfinite_train: str = "raise", max_eval_bundles: int = 1) -> None:
        self.out_dir = Path(out_dir)
        self.train, self.eval = train, eval
        self.on_nonfinite_train = on_nonfinite_train
        self.max_eval_bundles = max_eval_bundles
        self.bundles: list[Path] = []
        self._per_split: Counter[str] = Counter()
        self._train_monitor: Monitor | None = None

    def context(self, trainer: TrainerView, phase: str) -> contextlib.AbstractContextManager[Any]:
        if phase == "train" and self.train:
            return self._train(trainer)
        if phase == "eval" and self.eval:
            split = trainer.eval_split or "eval"
            if self._per_split[split] < self.max_eval_bundles:
                return self._eval(trainer, split)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def _eval(self, trainer: TrainerView, split: str) -> Iterator[None]:
        found: list[Path] = []
        try:
            with monitored_eval(trainer.model, self.out_dir, split=split, config=trainer.model.config.to_dict(),
                                run_config=trainer.cfg.raw, bundles=found):
                yield
        finally:
            self._per_split[split] += len(found)
            self.bundles.extend(found)

    @contextlib.contextmanager
    def _train(self, trainer: TrainerView) -> Iterator[None]:
        stage = trainer.stage or "train"
        mon = nanprobe.monitor(trainer.model, out_dir=self.out_dir, on_nonfinite=self.on_nonfinite_train,
                               methods=("train_logits",), factory=FACTORY, config=trainer.model.config.to_dict(),
                               run_config=trainer.cfg.raw, run_name=f"train-{stage}", optimizer=trainer.optimizer)
        self._train_monitor = mon
        try:
            with mon:
                yield
        finally:
            self._train_monitor = None
            self.bundles.extend(mon.bundles)

    def on_train_step(self, trainer: TrainerView, stage: str, step: int, batch: dict[str, Any], loss: Any) -> None:
        if self._train_monitor is not None:  # the loss history tail that a bundle carries
            self._train_monitor.log(loss=loss, epoch=trainer.state.epoch)

    def on_fit_end(self, trainer: TrainerView, metrics: dict[str, Any]) -> None:
        metrics["nanprobe_bundles"] = [str(b) for b in self.bundles]
