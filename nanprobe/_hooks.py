"""Removing hooks completely.

``RemovableHandle.remove()`` of a *global* forward hook registered ``with_kwargs=True`` or
``always_call=True`` leaves the hook's id in torch's side tables (``_global_forward_hooks_with_kwargs``,
``_global_forward_hooks_always_called``). Ids are never reused, so it is harmless, but "leave no trace" means
no trace: every global handle nanprobe owns is removed through :func:`remove_handle`."""

from __future__ import annotations

from torch.nn.modules import module as _module
from torch.utils.hooks import RemovableHandle

__all__ = ["remove_handle"]


def remove_handle(handle: RemovableHandle) -> None:
    handle.remove()
    _module._global_forward_hooks_with_kwargs.pop(handle.id, None)
    _module._global_forward_hooks_always_called.pop(handle.id, None)
