"""Watching a model method other than ``forward`` (e.g. ``model.train_logits(...)`` in a training loop).

Global module hooks only fire on ``model(...)``. For a method, the monitor swaps in a thin wrapper on the
instance (removed on exit) that does what the watcher does for ``forward``. A diagnosis re-runs the method
through :func:`method_adapter`: a shallow copy of the model whose ``forward`` is that method, sharing the
submodules (so module names are unchanged) and the parameters."""

from __future__ import annotations

import copy
import types
from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = ["method_adapter", "patch_method"]

_TARGET = "_nanprobe_method_target"


def method_adapter(model: nn.Module, method: str | None) -> nn.Module:
    """``model`` itself when ``method`` is None or "forward"; else a view whose ``forward`` runs ``method``."""
    if method in (None, "forward"):
        return model
    fn = getattr(type(model), method, None)
    if not callable(fn):
        raise AttributeError(f"{type(model).__name__} has no method {method!r}")
    adapter = copy.copy(model)  # shares _modules, _parameters and _buffers with the model
    # The real model rides along as a plain attribute (not a submodule, so names are unchanged). A deep copy
    # of the adapter (a replay's upcast copy) copies it with the same memo, so the copy's method runs on
    # the copied submodules, never on the original float32 ones.
    object.__setattr__(adapter, _TARGET, model)

    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        # The method is bound to the real model, so ``self(...)`` inside it is its real forward; the root's
        # own train flag follows the adapter's for the call (the submodules are shared anyway).
        target = self.__dict__[_TARGET]
        previous = target.training
        target.training = self.training
        try:
            return fn(target, *args, **kwargs)
        finally:
            target.training = previous

    object.__setattr__(adapter, "forward", types.MethodType(forward, adapter))
    return adapter


def patch_method(model: nn.Module, method: str, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]
                 ) -> Callable[[], None]:
    """Replace ``model.<method>`` on the instance by ``wrap(original bound method)``; returns the undo."""
    original = getattr(model, method, None)
    if not callable(original):
        raise AttributeError(f"{type(model).__name__} has no method {method!r} to monitor")
    had_own = method in model.__dict__
    previous = model.__dict__.get(method)
    object.__setattr__(model, method, wrap(original))

    def undo() -> None:
        if had_own:
            object.__setattr__(model, method, previous)
        else:
            model.__dict__.pop(method, None)

    return undo
