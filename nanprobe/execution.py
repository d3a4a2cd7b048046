"""The one way nanprobe runs a batch: mode, grad, the backward target, RNG, finite checks and restoration.

Every re-execution goes through an :class:`Executor`: the diagnosis' control run, localization, replays and
sample bisection, the monitor's per-layer snapshots, the probe's ``probe_model`` and ``assert_stable``. Each
run starts from a given RNG state, runs ``model(batch)`` by the calling convention
(:func:`nanprobe.batches.call_model`) in the requested :class:`Mode`, back-propagates when asked (a scalar
output as is, else the sum of its floating outputs), checks outputs and gradients with one host read each,
and leaves the model, torch's global switches and the caller's RNG exactly as they were
(:func:`nanprobe.restore.isolated_state`: no in-place write to anything the caller holds).
"""

from __future__ import annotations

import contextlib
import enum
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nanprobe._hooks import remove_handle
from nanprobe.batches import batch_size, call_model
from nanprobe.errors import InputError, NanprobeError
from nanprobe.restore import isolated_state, preserved_globals
from nanprobe.rng import RNGState
from nanprobe.sentinel import CLEAN, FiniteCheck, check_finite, check_gradients, tensor_leaves

__all__ = ["Execution", "Executor", "Mode", "OutOfTime", "backward_target", "execute", "mode_of", "parse_mode"]

ContextFactory = Callable[[], contextlib.AbstractContextManager[Any]]


class Mode(str, enum.Enum):
    """How a batch runs: ``eval`` is ``model.eval()`` under ``torch.no_grad()`` (grad on for a backward);
    ``train`` is ``model.train()`` with grad on."""

    EVAL = "eval"
    TRAIN = "train"

    def __str__(self) -> str:
        return self.value

    @property
    def other(self) -> Mode:
        return Mode.TRAIN if self is Mode.EVAL else Mode.EVAL


def parse_mode(value: str | Mode) -> Mode:
    """The one validator: ``"eval"``/``"train"`` (or a :class:`Mode`) to a Mode; anything else is an
    :class:`~nanprobe.errors.InputError`."""
    try:
        return Mode(value)
    except ValueError:
        raise InputError(f"mode must be 'eval' or 'train', not {value!r}") from None


class OutOfTime(BaseException):
    """A run was stopped at a module boundary because the executor's deadline passed. A BaseException, so
    the model's own ``except Exception`` blocks do not swallow it."""


def mode_of(training: bool) -> Mode:
    """The mode a module's ``training`` flag means."""
    return Mode.TRAIN if training else Mode.EVAL


def backward_target(output: Any) -> torch.Tensor | None:
    """What ``--backward`` back-propagates: the output itself when it is a floating scalar, else the sum of
    its floating outputs that require grad (the contract's rule); ``None`` when nothing requires grad."""
    if isinstance(output, torch.Tensor) and output.numel() == 1 and output.is_floating_point() \
            and output.requires_grad:
        return output.reshape(())
    parts = [t.float().sum() for _, t in tensor_leaves(output) if t.requires_grad and t.is_floating_point()]
    if not parts:
        return None
    return torch.stack(parts).sum()


@dataclass
class Execution:
    """What one run showed: output (and gradient) finiteness, and the error when the model raised."""

    output: FiniteCheck
    gradients: FiniteCheck | None = None
    """``None`` when no backward ran (not asked for, or no output required grad)."""
    error: BaseException | None = None
    value: Any = field(default=None, repr=False)  # the model's output, when asked for
    rng_after: RNGState | None = field(default=None, repr=False)  # the RNG as the run left it

    @property
    def nonfinite(self) -> bool:
        return self.output.nonfinite or bool(self.gradients and self.gradients.nonfinite)

    @property
    def samples(self) -> list[int]:
        return list(self.output.samples)

    @property
    def kind(self) -> str | None:
        if self.output.nonfinite:
            return self.output.kind
        return self.gradients.kind if self.gradients and self.gradients.nonfinite else None


@dataclass
class Executor:
    """Runs batches of one model, each from a given RNG state, counting every forward pass.

    ``mode=None`` keeps the model's train/eval flags and the current grad mode (the probe's ``probe_model``);
    ``isolate=False`` lets a run change the model's buffers and gradients (never used by a diagnosis).
    ``deadline`` (a ``time.monotonic()`` value): a run still going then stops at the next module call (a
    global forward pre-hook, which leaves fast paths alone) and comes back with ``error`` an :class:`OutOfTime`.
    """

    model: nn.Module
    mode: Mode | None = Mode.EVAL
    backward: bool = False
    progress: Callable[[str], None] | None = None
    isolate: bool = True
    passes: int = 0
    deadline: float | None = None

    def run(self, batch: Any, rng: RNGState | None = None, *, label: str = "run", mode: Mode | None = None,
            grad: bool | None = None, contexts: Sequence[ContextFactory] = (),
            instrument: ContextFactory | None = None, model: nn.Module | None = None, keep_output: bool = False,
            raise_errors: bool = False) -> Execution:
        """One forward (and backward with ``self.backward``) of ``batch``. ``contexts`` are entered around the
        call (a replay's switches), ``instrument`` innermost (hooks, dispatch modes). A model that raises gives
        an :class:`Execution` with ``error`` set, or with ``raise_errors`` the exception itself."""
        if self.progress is not None:
            self.progress(label)
        self.passes += 1
        net = model if model is not None else self.model
        run_mode = mode if mode is not None else self.mode
        saved = RNGState.capture()
        try:
            with contextlib.ExitStack() as stack:
                stack.enter_context(preserved_globals())
                if self.isolate:
                    stack.enter_context(isolated_state(net))
                for make in contexts:
                    stack.enter_context(make())
                if run_mode is not None:
                    net.train(run_mode is Mode.TRAIN)
                if grad is None:  # without a mode, grad mode is the caller's too
                    grad = (run_mode is Mode.TRAIN or self.backward) if run_mode is not None else \
                        torch.is_grad_enabled()
                stack.enter_context(torch.set_grad_enabled(grad))
                if rng is not None:
                    rng.restore()
                if instrument is not None:
                    stack.enter_context(instrument())
                if self.deadline is not None:
                    stack.enter_context(_stop_at(self.deadline))
                return self._execute(net, batch, keep_output)
        except OutOfTime as e:
            return Execution(output=CLEAN, error=e)
        except NanprobeError:
            raise
        except Exception as e:  # the user's model raised
            if raise_errors:
                raise
            return Execution(output=CLEAN, error=e)
        finally:
            saved.restore()

    def _execute(self, net: nn.Module, batch: Any, keep_output: bool) -> Execution:
        output = call_model(net, batch)
        out_check = check_finite(output, batch_size=batch_size(batch))
        grads: FiniteCheck | None = None
        if self.backward:
            target = backward_target(output)
            if target is not None:
                with warnings.catch_warnings():  # full backward hooks on a batch that needs no grad
                    warnings.filterwarnings("ignore", message="Full backward hook is firing")
                    target.backward()
                grads = check_gradients(net)
        return Execution(output=out_check, gradients=grads, value=output if keep_output else None,
                         rng_after=RNGState.capture())


@contextlib.contextmanager
def _stop_at(deadline: float) -> Any:
    def check(module: nn.Module, args: Any) -> None:
        if time.monotonic() > deadline:
            raise OutOfTime(f"deadline passed before {type(module).__name__} ran")

    handle = torch.nn.modules.module.register_module_forward_pre_hook(check)
    try:
        if time.monotonic() > deadline:
            raise OutOfTime("deadline passed before the run started")
        yield
    finally:
        remove_handle(handle)


def execute(model: nn.Module, batch: Any, *, mode: Mode | str | None = Mode.EVAL, backward: bool = False,
            rng: RNGState | None = None, instrument: ContextFactory | None = None, keep_output: bool = False,
            isolate: bool = True) -> Execution:
    """One run of ``batch`` through an :class:`Executor` (the model's own exception propagates)."""
    run_mode = parse_mode(mode) if mode is not None else None
    runner = Executor(model, mode=run_mode, backward=backward, isolate=isolate)
    return runner.run(batch, rng, instrument=instrument, keep_output=keep_output, raise_errors=True)
