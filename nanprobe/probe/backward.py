"""Backward hooks of the probe (a mixin): full backward hooks per module and a post-accumulate hook per
parameter. The backward origin is the first module, in backward order, that emitted a non-finite gradient
(w.r.t. its inputs or its own parameters) while the gradient it received was finite. Gradients are read
back at once (one sync per hook), backward being the rarer, opt-in mode."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from nanprobe.probe.records import CallRecord, kind_of, tensor_kinds
from nanprobe.stats import TensorStats, tensor_stats
from nanprobe.walk import iter_tensors

__all__ = ["BackwardMixin", "kinds_of"]


class BackwardMixin:
    keep_nonfinite: int
    _index: int
    _order: int
    _step_no: int
    _ring: deque[CallRecord]
    _kept: list[CallRecord]
    _bw_in: dict[int, frozenset[str]]
    _bw_nonfinite: bool
    _bw_origin: CallRecord | None

    def _bw_pre(self, module: nn.Module, grad_output: tuple[Any, ...]) -> None:
        self._bw_in[id(module)] = kinds_of(grad_output)

    def _make_bw(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, grad_input: tuple[Any, ...], grad_output: tuple[Any, ...]) -> None:
            outputs = {p: tensor_stats(t) for p, t in iter_tensors(grad_input, "grad_in")}
            self._add_backward(module, name, kinds_of(grad_output), outputs)
        return hook

    def _make_grad_hook(self, name: str, module: nn.Module, pname: str) -> Callable[[torch.Tensor], None]:
        def hook(param: torch.Tensor) -> None:
            if param.grad is not None:
                s = tensor_stats(param.grad)
                if s.nonfinite:
                    self._add_backward(module, name, self._bw_in.get(id(module), frozenset()),
                                       {f"grad.{pname}": s})
        return hook

    def _add_backward(self, module: nn.Module, name: str, in_kinds: frozenset[str],
                      outputs: dict[str, TensorStats]) -> None:
        rec = CallRecord(index=self._index, module=name, module_type=type(module).__name__, phase="backward",
                         inputs_finite=not in_kinds, outputs=outputs, step=self._step_no, in_kinds=in_kinds)
        self._index += 1
        rec.order = self._order
        self._order += 1
        out = rec.out_kinds
        rec.produced = out - in_kinds
        rec.kind = kind_of(rec.produced) or kind_of(out)
        self._ring.append(rec)
        if out:
            self._bw_nonfinite = True
            if len(self._kept) < self.keep_nonfinite:
                self._kept.append(rec)
            if self._bw_origin is None and rec.produced:
                self._bw_origin = rec


def kinds_of(obj: Any) -> frozenset[str]:
    kinds: frozenset[str] = frozenset()
    for _, t in iter_tensors(obj, ""):
        kinds = kinds | tensor_kinds(t.detach())
    return kinds
