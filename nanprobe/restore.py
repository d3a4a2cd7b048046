"""Leave no trace: re-execute a model without changing anything the caller holds, and put torch's global
switches back.

:func:`isolated_state` is how every re-execution (control run, replays, bisection, the monitor's diagnosis,
the probe) protects the user's run. It never writes into a tensor the caller holds. Restoring by copying
saved values back (``buffer.copy_(saved)``) would bump the version counter of every buffer, and autograd
refuses to backpropagate through a graph that saved one of them (an ``nn.Embedding`` indexed by a
``position_ids`` buffer, BatchNorm's running statistics): the user's own ``loss.backward()`` after a
diagnosis inside the step would raise "modified by an inplace operation". So instead:

* buffers: for the block, every module's buffer slots point to private copies (aliases kept: one copy per
  tensor), so a train-mode forward updates the copies (BatchNorm's running statistics and
  ``num_batches_tracked``); afterwards the slots get the caller's very tensors back, never written;
* ``.grad``: set to ``None`` for the block (a replay's backward fills new tensors), then the caller's
  gradient tensors are put back;
* the ``training`` flags and parameters' ``requires_grad`` are plain attributes, restored as they were.

Parameters themselves are not copied (that would double the model's memory); a forward pass does not
write them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["isolated_state", "preserved_globals"]


@contextlib.contextmanager
def isolated_state(model: nn.Module, *, grads: bool = True) -> Iterator[nn.Module]:
    """Run a block against ``model`` with private buffers (and, with ``grads``, no ``.grad``); afterwards the
    model holds exactly the tensor objects it held before, untouched — also on exceptions."""
    modules = list(model.modules())
    training = [(m, m.training) for m in modules]
    slots: list[tuple[dict[str, torch.Tensor | None], str, torch.Tensor]] = []
    copies: dict[int, torch.Tensor] = {}
    params = list(model.parameters())
    requires_grad = [p.requires_grad for p in params]
    saved_grads = [p.grad for p in params] if grads else []
    try:
        for m in modules:
            for name, buf in m._buffers.items():
                if buf is None:
                    continue
                copy = copies.get(id(buf))
                if copy is None:
                    copy = copies[id(buf)] = buf.detach().clone().requires_grad_(buf.requires_grad)
                slots.append((m._buffers, name, buf))
                m._buffers[name] = copy
        if grads:
            for p in params:
                p.grad = None
        yield model
    finally:
        for table, name, original in slots:
            table[name] = original
        for m, flag in training:
            m.training = flag
        for p, flag in zip(params, requires_grad):
            if p.requires_grad != flag:
                p.requires_grad_(flag)
        if grads:
            for p, g in zip(params, saved_grads):
                p.grad = g


@contextlib.contextmanager
def preserved_globals() -> Iterator[None]:
    """Restore grad mode, the MHA fast-path switch, SDPA backend switches and the default dtype."""
    grad = torch.is_grad_enabled()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    sdpa = (
        torch.backends.cuda.flash_sdp_enabled(),
        torch.backends.cuda.mem_efficient_sdp_enabled(),
        torch.backends.cuda.math_sdp_enabled(),
        torch.backends.cuda.cudnn_sdp_enabled(),
    )
    default_dtype = torch.get_default_dtype()
    try:
        yield
    finally:
        torch.set_grad_enabled(grad)
        torch.backends.mha.set_fastpath_enabled(fastpath)
        torch.backends.cuda.enable_flash_sdp(sdpa[0])
        torch.backends.cuda.enable_mem_efficient_sdp(sdpa[1])
        torch.backends.cuda.enable_math_sdp(sdpa[2])
        torch.backends.cuda.enable_cudnn_sdp(sdpa[3])
        torch.set_default_dtype(default_dtype)
