"""accelerate glue: the monitor for a loop written with ``accelerate`` (``accelerator.prepare``), one line.

    with nanprobe.integrations.accelerate.monitor(accelerator, model, "nan-bundles", optimizer=optimizer) as mon:
        for batch in loader: ...                        # the loop is unchanged

``model`` is the prepared one (under ``accelerate launch`` a DDP wrapper: the monitor watches its calls and
diagnoses the module inside, which runs no collective). The real optimizer is taken out of accelerate's
``AcceleratedOptimizer`` (whose own step hooks never fire) and the accelerator's GradScaler (fp16) is attached,
so its skipped overflow steps are recorded, not reported. Under ``accelerate launch`` the process group is
initialised and the ranks agree as under torchrun: one all_reduce per grad-enabled model call (or per
``mon.step()`` once that is called), so a NaN on one rank stops every rank at the same step.

Nothing here imports accelerate: the accelerator is read through ``accelerator.scaler``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from nanprobe.integrations._glue import real_optimizer
from nanprobe.monitoring import Monitor
from nanprobe.monitoring import monitor as _monitor

__all__ = ["monitor"]


def monitor(accelerator: Any, model: nn.Module, out_dir: str | Path = "nanprobe-bundles", *, optimizer: Any = None,
            **monitor_kwargs: Any) -> Monitor:
    """:func:`nanprobe.monitor` for a model prepared by ``accelerator``, with its real optimizer and its scaler;
    the other keyword arguments are the monitor's."""
    if optimizer is not None:
        optimizer = real_optimizer(optimizer)
    scaler = monitor_kwargs.pop("scaler", None) or getattr(accelerator, "scaler", None)
    return _monitor(model, out_dir, optimizer=optimizer, scaler=scaler, **monitor_kwargs)
