"""Watch the top-level calls of chosen models without a single per-module hook.

Per-module hooks change what runs: ``nn.TransformerEncoderLayer`` refuses its fast path when any of its
submodules has a forward (pre-)hook. Global module hooks do not, so the watcher uses one global pre-hook
and one global post-hook, reacts only to calls of the watched models that are not nested inside another
watched call, captures the RNG state before the call and the call's arguments after it, and checks the
outputs with the sentinel (one host sync per call).

Under ``torch.compile`` a watched module called from compiled code has its global hooks traced by Dynamo. The
hooks only test membership (traceable, no graph break for the modules nobody watches); what they do for a
watched call runs through :func:`eager`, which Dynamo never traces: it breaks the graph there and runs
nanprobe's handling (and any diagnosis it starts) eagerly."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils.hooks import RemovableHandle

from nanprobe._hooks import remove_handle
from nanprobe.batches import ModelCall, batch_size
from nanprobe.rng import RNGState
from nanprobe.sentinel import FiniteCheck, check_finite

__all__ = ["CallEvent", "Watcher", "eager"]

F = TypeVar("F", bound=Callable[..., Any])


def eager(fn: F) -> F:
    """``fn`` marked so that Dynamo never traces it, nor anything it calls: under ``torch.compile`` the graph
    breaks there and ``fn`` runs eagerly. Imports ``torch._dynamo`` (about a second, once per process)."""
    return torch.compiler.disable(fn, recursive=True)  # type: ignore[return-value]


@dataclass
class CallEvent:
    """One finished top-level call of a watched model."""

    model: nn.Module
    name: str
    call_index: int  # per watched model, from 0
    call: ModelCall
    rng: RNGState | None  # the RNG state just before the call
    output: Any
    check: FiniteCheck
    training: bool
    grad_enabled: bool
    compiled: bool = False  # called from code that torch.compile compiled (the hooks were traced by Dynamo)

    @property
    def batch(self) -> Any:
        """The call's arguments in the plainest batch form (tuple, dict or ModelCall)."""
        return self.call.simplest()


class Watcher:
    """Global hooks that see only top-level calls of the watched models. Use as a context manager."""

    def __init__(
        self,
        on_call: Callable[[CallEvent], None],
        *,
        capture_rng: bool = True,
        check_outputs: bool = True,
    ) -> None:
        self._on_call = on_call
        self._capture_rng = capture_rng
        self._check_outputs = check_outputs
        self._models: dict[int, tuple[nn.Module, str]] = {}
        self._counts: dict[int, int] = {}
        self._handles: list[RemovableHandle] = []
        self._local = threading.local()
        self._entered = self._enter  # made eager at install()
        self._finished = self._finish

    # -- which models ---------------------------------------------------------------------------
    def watch(self, model: nn.Module, name: str | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"watch() takes an nn.Module, not {type(model).__name__}")
        self._models[id(model)] = (model, name or type(model).__name__)
        self._counts.setdefault(id(model), 0)

    def unwatch(self, model: nn.Module) -> None:
        self._models.pop(id(model), None)

    @property
    def models(self) -> list[nn.Module]:
        return [m for m, _ in self._models.values()]

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> Watcher:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def install(self) -> None:
        if self._handles:
            return
        self._entered, self._finished = eager(self._enter), eager(self._finish)
        try:
            self._handles.append(register_module_forward_pre_hook(self._pre))
            self._handles.append(register_module_forward_hook(self._post, with_kwargs=True, always_call=True))
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        handles, self._handles = self._handles, []
        for handle in handles:
            remove_handle(handle)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Ignore every call inside this block (e.g. while a diagnosis re-executes the model)."""
        previous = getattr(self._local, "paused", False)
        self._local.paused = True
        try:
            yield
        finally:
            self._local.paused = previous

    # -- hooks ----------------------------------------------------------------------------------
    def _stack(self) -> list[tuple[int, RNGState | None, bool]]:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def _pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if id(module) in self._models:  # the only work for every other module call (traceable by Dynamo)
            self._entered(module, torch.compiler.is_compiling())  # True only while Dynamo traces this hook

    def _post(self, module: nn.Module, args: tuple[Any, ...], *rest: Any) -> None:
        if id(module) in self._models:
            self._finished(module, args, rest)

    def _enter(self, module: nn.Module, compiled: bool = False) -> None:
        if getattr(self._local, "paused", False):
            return
        stack = self._stack()
        rng = RNGState.capture() if self._capture_rng and not stack else None
        stack.append((id(module), rng, compiled))

    def _finish(self, module: nn.Module, args: tuple[Any, ...], rest: tuple[Any, ...]) -> None:
        key = id(module)
        if getattr(self._local, "paused", False):
            return
        stack = self._stack()
        if not stack or stack[-1][0] != key:
            return
        _, rng, compiled = stack.pop()
        if stack or len(rest) != 2:  # nested call, or the forward raised (always_call passes no kwargs)
            return
        kwargs, output = rest
        model, name = self._models[key]
        index = self._counts[key]
        self._counts[key] = index + 1
        call = ModelCall(tuple(args), dict(kwargs or {}))
        check = check_finite(output, batch_size=batch_size(call)) if self._check_outputs else FiniteCheck(False)
        self._on_call(
            CallEvent(
                model=model,
                name=name,
                call_index=index,
                call=call,
                rng=rng,
                output=output,
                check=check,
                training=model.training,
                grad_enabled=torch.is_grad_enabled(),
                compiled=compiled,
            )
        )
