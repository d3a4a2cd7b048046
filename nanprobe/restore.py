"""Leave no trace: put a model (and torch's global switches) back exactly as they were."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["preserved_globals", "preserved_model"]


@contextlib.contextmanager
def preserved_model(model: nn.Module, *, grads: bool = True) -> Iterator[nn.Module]:
    """Restore every module's ``training`` flag, the buffers' values (a train-mode forward updates BatchNorm
    running stats), parameters' ``requires_grad`` and, with ``grads``, their ``.grad`` — also on exceptions."""
    training = {m: m.training for m in model.modules()}
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    params = list(model.parameters())
    requires_grad = [p.requires_grad for p in params]
    saved_grads = [p.grad for p in params] if grads else []
    if grads:
        for p in params:
            p.grad = None
    try:
        yield model
    finally:
        for module, flag in training.items():
            module.training = flag
        with torch.no_grad():
            for live, saved in buffers:
                if live.shape == saved.shape and live.dtype == saved.dtype:
                    live.copy_(saved)
        for p, flag in zip(params, requires_grad):
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
