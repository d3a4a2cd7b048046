"""The instrumentation check: does the per-module-hook probe see what the uninstrumented control saw?"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from nanprobe.probe import Probe, ProbeResult

__all__ = ["HookedRun", "module_hooks", "probe_result"]


@dataclass
class HookedRun:
    """What the hooked run left behind: the probe's result when the probe was used."""

    method: str = "probe"
    result: Any = None
    error: str | None = None
    handles: list[Any] = field(default_factory=list)


def _noop(*_: Any) -> None:
    return None


@contextlib.contextmanager
def module_hooks(model: nn.Module, holder: HookedRun, *, backward: bool = False) -> Iterator[None]:
    """Per-module hooks on every module: nanprobe's probe (``holder.method == "probe"``), else no-op forward
    hooks, which have the same effect on fast paths. Every handle is removed on exit."""
    if holder.method == "probe":
        probe = Probe(model, backward=backward)
        with probe as p:
            try:
                yield
            finally:
                holder.result = p
        return
    holder.method = "noop_hooks"
    try:
        for m in model.modules():
            holder.handles.append(m.register_forward_pre_hook(_noop))
            holder.handles.append(m.register_forward_hook(_noop))
        yield
    finally:
        for h in holder.handles:
            h.remove()
        holder.handles.clear()


def probe_result(holder: HookedRun) -> ProbeResult | None:
    """The probe's result object, or None."""
    if holder.result is None:
        return None
    try:
        return holder.result.result()
    except Exception:  # the probe is best-effort here; the control and localization decide
        return None
