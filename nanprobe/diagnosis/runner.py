"""Counted, reproducible re-execution of one batch: the same RNG every time, the model restored after."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nanprobe.batches import batch_size as _batch_size
from nanprobe.batches import call_model
from nanprobe.errors import NanprobeError
from nanprobe.restore import preserved_globals, preserved_model
from nanprobe.rng import RNGState
from nanprobe.sentinel import CLEAN, FiniteCheck, backward_target, check_finite, check_gradients

__all__ = ["Execution", "Runner", "pass_budget"]

Context = Callable[[], contextlib.AbstractContextManager[Any]]


def pass_budget(batch_size: int) -> int:
    """Most forward passes one diagnosis of a failing batch of ``batch_size`` samples may cost."""
    return int(2 * math.log2(max(batch_size, 1))) + 12


@dataclass
class Execution:
    """What one counted execution showed: output (and gradient) finiteness, and the error if it raised."""

    output: FiniteCheck
    gradients: FiniteCheck | None = None
    error: BaseException | None = None
    value: Any = field(default=None, repr=False)
    rng_after: RNGState | None = field(default=None, repr=False)  # the RNG as the run left it

    @property
    def nonfinite(self) -> bool:
        return self.output.nonfinite or bool(self.gradients and self.gradients.nonfinite)

    @property
    def samples(self) -> list[int]:
        return list(self.output.samples)


@dataclass
class Runner:
    """Runs batches of one model, each from a fixed RNG state, counting every forward pass."""

    model: nn.Module
    mode: str = "eval"
    backward: bool = False
    progress: Callable[[str], None] | None = None
    passes: int = 0

    def run(
        self,
        batch: Any,
        rng: RNGState | None,
        *,
        label: str,
        mode: str | None = None,
        grad: bool | None = None,
        contexts: tuple[Context, ...] = (),
        instrument: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
        model: nn.Module | None = None,
        keep_output: bool = False,
        raise_errors: bool = False,
    ) -> Execution:
        """One forward (and backward with ``self.backward``) of ``batch``; ``contexts`` are entered around
        it (variant switches), ``instrument`` innermost (localization). Errors are returned, or raised as
        :class:`NanprobeError` with ``raise_errors``."""
        if self.progress is not None:
            self.progress(label)
        self.passes += 1
        net = model if model is not None else self.model
        run_mode = mode or self.mode
        size = _batch_size(batch)
        saved = RNGState.capture()
        try:
            with contextlib.ExitStack() as stack:
                stack.enter_context(preserved_globals())
                stack.enter_context(preserved_model(net))
                for make in contexts:
                    stack.enter_context(make())
                net.train(run_mode == "train")
                want_grad = grad if grad is not None else (run_mode == "train" or self.backward)
                stack.enter_context(torch.set_grad_enabled(want_grad))
                if rng is not None:
                    rng.restore()
                return self._execute(net, batch, size, stack, instrument, keep_output)
        except NanprobeError:
            raise
        except Exception as e:  # the user's model raised
            if raise_errors:
                raise NanprobeError(f"the model raised during {label}: {type(e).__name__}: {e}") from e
            return Execution(output=CLEAN, error=e)
        finally:
            saved.restore()

    def _execute(self, net: nn.Module, batch: Any, size: int | None, stack: contextlib.ExitStack,
                 instrument: Callable[[], contextlib.AbstractContextManager[Any]] | None,
                 keep_output: bool) -> Execution:
        if instrument is not None:
            stack.enter_context(instrument())
        output = call_model(net, batch)
        out_check = check_finite(output, batch_size=size)
        grads: FiniteCheck | None = None
        if self.backward:
            grads = CLEAN
            target = backward_target(output)
            if target is not None and target.requires_grad:
                with warnings.catch_warnings():  # our own backward hooks on a batch that needs no grad
                    warnings.filterwarnings("ignore", message="Full backward hook is firing")
                    target.backward()
                grads = check_gradients(net)
        return Execution(output=out_check, gradients=grads, value=output if keep_output else None,
                         rng_after=RNGState.capture())

