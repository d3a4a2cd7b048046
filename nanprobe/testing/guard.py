"""The NaN guard behind the pytest fixture ``nan_guard`` and ``pytest --nanprobe``.

The guard watches the top-level calls of chosen models through the :class:`~nanprobe.watch.Watcher`'s two
global hooks (no per-module hook, so native fast paths stay as they are), checks each output with one host
sync, checks the watched models' gradients once at the end of every backward that went through them, and
localizes a failure only when one happens, by re-executing that call under the diagnose engine."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from nanprobe.batches import batch_size
from nanprobe.errors import NonFiniteError
from nanprobe.execution import mode_of
from nanprobe.sentinel import check_finite, check_gradients, tensor_leaves
from nanprobe.testing.failures import GuardFailure, GuardSettings, find_origin
from nanprobe.watch import CallEvent, Watcher

__all__ = ["NanGuard", "iter_hook_dicts"]


# -- the guard ----------------------------------------------------------------------------------------
class _GuardWatcher(Watcher):
    """A Watcher that, when ``auto`` is on, also watches every module called at top level."""

    def __init__(self, on_call: Callable[[CallEvent], None]) -> None:
        # the guard checks outputs itself (to skip what can't be read)
        super().__init__(on_call, check_outputs=False)
        self.auto = False
        self._auto_keys: set[int] = set()

    def _pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        key = id(module)
        if (self.auto and key not in self._models and not self._stack()
                and not getattr(self._local, "paused", False)):
            self.watch(module, type(module).__name__)
            self._auto_keys.add(key)
        super()._pre(module, args)

    def forget_auto(self) -> None:
        """Drop the models that were watched only because they were called (no reference kept)."""
        for key in self._auto_keys:
            self._models.pop(key, None)
            self._counts.pop(key, None)
        self._auto_keys.clear()


@dataclass
class _LastCall:
    batch: Any
    rng: Any
    mode: str
    call_index: int


class NanGuard:
    """Fail as soon as a NaN/Inf reaches a watched model's output or gradients.

    ``with NanGuard() as guard: guard.watch(model); ...`` raises :class:`NonFiniteError` at the forward (or
    the ``backward()``) that produced it, with the origin module localized by the diagnose engine."""

    def __init__(self, settings: GuardSettings | None = None) -> None:
        self.settings = settings or GuardSettings()
        self.failures: list[GuardFailure] = []
        self.armed = True  # when False the guard still records, but raises nothing (e.g. during teardown)
        self._watcher = _GuardWatcher(self._on_call)
        self._last: dict[int, _LastCall] = {}
        self._incoming: dict[int, list[torch.Tensor]] = {}
        self._tensor_handles: list[RemovableHandle] = []
        self._reported: set[tuple[int, str]] = set()

    # -- public API ------------------------------------------------------------------------------
    def watch(self, model: nn.Module, name: str | None = None) -> nn.Module:
        """Guard ``model``'s top-level calls (from now until the end of the test). Returns the model."""
        self._watcher.watch(model, name)
        self.install()
        return model

    def unwatch(self, model: nn.Module) -> None:
        self._watcher.unwatch(model)

    @property
    def models(self) -> list[nn.Module]:
        return self._watcher.models

    @property
    def auto(self) -> bool:
        return self._watcher.auto

    @auto.setter
    def auto(self, value: bool) -> None:
        self._watcher.auto = value
        if not value:
            self._watcher.forget_auto()

    def check(self, obj: Any, name: str = "value") -> None:
        """Raise :class:`NonFiniteError` if any tensor in ``obj`` (nested structure) holds NaN/Inf."""
        __tracebackhide__ = True
        found = check_finite(obj, prefix=name)
        if not found.nonfinite or (found.kind == "inf" and self.settings.allow_inf) or self.settings.allows(name):
            return
        failure = GuardFailure(model=name, phase="check", kind=found.kind or "nan", samples=found.samples,
                               paths=found.paths)
        self._fail(failure, force=True)

    def install(self) -> None:
        self._watcher.install()

    def remove(self) -> None:
        """Remove every hook (global module hooks and the tensor hooks on outputs)."""
        self._watcher.auto = False
        self._watcher.forget_auto()
        self._watcher.remove()
        handles, self._tensor_handles = self._tensor_handles, []
        for handle in handles:
            handle.remove()
        self._last.clear()
        self._incoming.clear()

    def __enter__(self) -> NanGuard:
        self.install()
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        try:
            if exc_type is None:
                self.finish()
        finally:
            self.remove()

    def finish(self) -> None:
        """End-of-test checks: re-raise a failure the code under test swallowed, then the watched models'
        gradients and parameters. Disarms the guard (later calls are no longer raised)."""
        __tracebackhide__ = True
        if not self.settings.enabled:
            self.armed = False
            return
        try:
            if self.failures:
                failure = self.failures[0]
                error = NonFiniteError(failure.message + "\n  (raised again at the end of the test: the code "
                                       "under test caught the first error)", diagnosis=failure.diagnosis)
                error.guard_failure = failure  # type: ignore[attr-defined]
                raise error
            for model in self.models:
                if self.settings.backward:
                    self._check_model_gradients(model, note_when_late=True)
                if self.settings.parameters:
                    self._check_parameters(model)
        finally:
            self.armed = False

    # -- hooks -----------------------------------------------------------------------------------
    def _on_call(self, event: CallEvent) -> None:
        __tracebackhide__ = True
        if not self.settings.enabled:
            return
        if _untouchable():
            return
        mode = mode_of(event.training).value
        key = id(event.model)
        rng = event.rng
        if event.grad_enabled and self.settings.backward:
            self._last[key] = _LastCall(event.batch, rng, mode, event.call_index)
            self._hook_output_grads(event.model, event.output)
        try:
            check = check_finite(event.output, batch_size=batch_size(event.call))
        except RuntimeError:  # tensors that can't be read (functorch transforms, fake/meta tensors)
            return
        if not check.nonfinite or (check.kind == "inf" and self.settings.allow_inf) or self.settings.allows(event.name):
            return
        failure = GuardFailure(model=event.name, phase="forward", kind=check.kind or "nan", samples=check.samples,
                               paths=check.paths, call_index=event.call_index, mode=mode,
                               module=event.model, batch=event.batch, rng=rng)
        if self.settings.diagnose and not self.failures:
            with self._watcher.paused():
                first, diagnosis, note = find_origin(event.model, event.batch, mode=mode, backward=False, rng=rng)
            failure.first_nonfinite, failure.diagnosis, failure.note = first, diagnosis, note
            if first and self.settings.allows(first.get("module"), first.get("module_type")):
                return
        self._fail(failure)

    def _hook_output_grads(self, model: nn.Module, output: Any) -> None:
        for _, tensor in tensor_leaves(output):
            if tensor.requires_grad:
                self._tensor_handles.append(tensor.register_hook(partial(self._on_output_grad, model)))

    def _on_output_grad(self, model: nn.Module, grad: torch.Tensor) -> None:
        self._incoming.setdefault(id(model), []).append(torch.isfinite(grad).all())
        # one callback per output gradient; the first one at the end of the backward consumes everything
        torch.autograd.Variable._execution_engine.queue_callback(self._after_backward)

    def _after_backward(self) -> None:
        """Runs once at the end of each backward that reached a watched model's output."""
        __tracebackhide__ = True
        incoming, self._incoming = self._incoming, {}
        for model in self.models:
            flags = incoming.get(id(model))
            if flags is not None:
                upstream_bad = not bool(torch.stack([f.cpu() for f in flags]).all())
                self._check_model_gradients(model, upstream_bad=upstream_bad)

    # -- checks ----------------------------------------------------------------------------------
    def _check_model_gradients(self, model: nn.Module, *, upstream_bad: bool = False,
                               note_when_late: bool = False) -> None:
        __tracebackhide__ = True
        grads = check_gradients(model)
        if not grads.nonfinite or (grads.kind == "inf" and self.settings.allow_inf):
            return
        if (id(model), "backward") in self._reported:
            return
        name = self._name(model)
        last = self._last.get(id(model))
        failure = GuardFailure(model=name, phase="backward", kind=grads.kind or "nan", paths=grads.paths,
                               call_index=last.call_index if last else None, mode=last.mode if last else None,
                               module=model, batch=last.batch if last else None, rng=last.rng if last else None)
        if upstream_bad:
            failure.note = ("origin: outside the model: the gradient arriving at its output was already "
                            "non-finite (the loss or other code after the model produced it)")
        elif self.settings.diagnose and last is not None:
            with self._watcher.paused(), torch.enable_grad():
                first, diagnosis, note = find_origin(model, last.batch, mode=last.mode, backward=True, rng=last.rng)
            failure.first_nonfinite, failure.diagnosis, failure.note = first, diagnosis, note
            if first and self.settings.allows(first.get("module"), first.get("module_type")):
                return
        if note_when_late:
            failure.note = (failure.note + "\n  " if failure.note else "") + "(found at the end of the test)"
        self._reported.add((id(model), "backward"))
        self._fail(failure)

    def _check_parameters(self, model: nn.Module) -> None:
        __tracebackhide__ = True
        found = check_finite(dict(model.named_parameters()), prefix="")
        if not found.nonfinite or (found.kind == "inf" and self.settings.allow_inf):
            return
        names = tuple(p[2:-2] if p.startswith("['") else p for p in found.paths)
        self._fail(GuardFailure(model=self._name(model), phase="parameters", kind=found.kind or "nan",
                                paths=names, module=model))

    def _name(self, model: nn.Module) -> str:
        entry = self._watcher._models.get(id(model))
        return entry[1] if entry else type(model).__name__

    def _fail(self, failure: GuardFailure, *, force: bool = False) -> None:
        __tracebackhide__ = True
        self.failures.append(failure)
        if self.armed or force:
            error = NonFiniteError(failure.message, diagnosis=failure.diagnosis)
            error.guard_failure = failure  # type: ignore[attr-defined]  # lets the plugin trim the traceback
            raise error


def _untouchable() -> bool:
    """Inside ``torch.compile``/``torch.jit`` tracing the guard must not read values (nor add hooks)."""
    return bool(torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting())


def iter_hook_dicts(modules: Iterable[nn.Module] = ()) -> Iterator[tuple[str, Mapping[Any, Any]]]:
    """Every global module-hook dict, and every hook dict of ``modules`` (for "no hooks left" checks)."""
    from torch.nn.modules import module as module_mod

    for name in dir(module_mod):
        if name.startswith("_global_") and "hook" in name and isinstance(getattr(module_mod, name), dict):
            yield name, getattr(module_mod, name)
    for mod in modules:
        for sub_name, sub in mod.named_modules():
            for attr, value in vars(sub).items():
                if "hook" in attr and isinstance(value, dict):
                    yield f"{sub_name or '<root>'}.{attr}", value
