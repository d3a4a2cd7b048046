"""Run a tiny computation and record what torch did: outputs, gradients, errors, and every op call."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from nanprobe.knowledge import Entry, run_check
from nanprobe.knowledge.names import key


@dataclass(frozen=True)
class Demo:
    """``fn(*inputs)``; the floating inputs listed in ``grad`` (all of them when None) get gradients.
    ``second_order`` differentiates twice (the gradient of the sum of the first gradients)."""

    fn: Callable[..., Any]
    inputs: tuple[Any, ...]
    grad: tuple[int, ...] | None = None
    second_order: bool = False
    functions: bool = True  # also record torch-level function calls (not only aten ops)


@dataclass
class Call:
    op: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    dispatch: bool  # True: an aten op at dispatch; False: a torch-level function (torch.rms_norm, F.cdist...)


@dataclass
class Run:
    forward: list[torch.Tensor] = field(default_factory=list)
    grads: list[torch.Tensor] = field(default_factory=list)
    forward_error: BaseException | None = None
    backward_error: BaseException | None = None
    calls: list[Call] = field(default_factory=list)

    @property
    def error(self) -> BaseException | None:
        return self.forward_error or self.backward_error


def kinds(tensors: list[torch.Tensor]) -> set[str]:
    found = set()
    for t in tensors:
        if bool(torch.isnan(t).any()):
            found.add("nan")
        if bool(torch.isinf(t).any()):
            found.add("inf")
    return found


def _floats(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        if obj.is_complex():
            return [torch.view_as_real(obj)]
        return [obj] if obj.is_floating_point() else []
    if isinstance(obj, (tuple, list)):
        return [t for v in obj for t in _floats(v)]
    return []


class _Dispatch(TorchDispatchMode):
    def __init__(self, calls: list[Call]) -> None:
        super().__init__()
        self.calls = calls

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        self.calls.append(Call(str(func.__name__), tuple(args), dict(kwargs or {}), dispatch=True))
        return func(*args, **(kwargs or {}))


class _Functions(TorchFunctionMode):
    def __init__(self, calls: list[Call]) -> None:
        super().__init__()
        self.calls = calls

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        name = getattr(func, "__name__", "")
        if name and not name.startswith("__"):
            self.calls.append(Call(name, tuple(args), dict(kwargs or {}), dispatch=False))
        return func(*args, **(kwargs or {}))


def execute(demo: Demo) -> Run:
    run = Run()
    inputs = []
    leaves = []
    for i, value in enumerate(demo.inputs):
        if isinstance(value, torch.Tensor) and value.is_floating_point() and (demo.grad is None or i in demo.grad):
            value = value.detach().clone().requires_grad_(True)
            leaves.append(value)
        inputs.append(value)
    try:
        functions = _Functions(run.calls) if demo.functions else contextlib.nullcontext()
        with warnings.catch_warnings(), functions, _Dispatch(run.calls):
            warnings.simplefilter("ignore")  # "degrees of freedom is <= 0" and the like: expected here
            out = demo.fn(*inputs)
    except Exception as e:  # the condition may be "torch raises"
        run.forward_error = e
        return run
    run.forward = [t.detach() for t in _floats(out)]
    live = [t for t in _floats(out) if t.requires_grad]
    if not live or not leaves:
        return run
    try:
        total = sum(t.sum() for t in live)
        grads = torch.autograd.grad(total, leaves, allow_unused=True, create_graph=demo.second_order)
        if demo.second_order:
            second = sum(g.sum() for g in grads if g is not None)
            grads = torch.autograd.grad(second, leaves, allow_unused=True)
        run.grads = [g for g in grads if g is not None]
    except Exception as e:
        run.backward_error = e
    return run


def entry_keys(entry: Entry) -> set[str]:
    names = (entry.name, *entry.aliases) if entry.kind == "op" else entry.aten_ops
    return {key(n) for n in names}


def check_fires(entry: Entry, check_id: str, run: Run) -> list[str]:
    """Evidence texts from ``check_id`` on every recorded call of the entry's ops."""
    keys = entry_keys(entry)
    found = []
    for call in run.calls:
        if key(call.op) not in keys:
            continue
        evidence = run_check(check_id, call.op, call.args, call.kwargs, strict=call.dispatch)
        if evidence is not None:
            found.append(evidence.text)
    return found
