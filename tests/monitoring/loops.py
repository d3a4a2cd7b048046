"""The README's training loop under ``nanprobe.monitor``, for the tests that need a run: the loss computed
outside the model and checked, the gradients checked, the optimizer (and GradScaler) attached."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nanprobe.monitoring import monitor


def train_under_monitor(out_dir: Path, model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
                        y: torch.Tensor, steps: int, *, autocast: bool = False,
                        scaler: torch.amp.GradScaler | None = None, quiet: bool = False,
                        clip: float | None = None, batch: int | None = None,
                        **monitor_kwargs: Any) -> tuple[Any, list[float]]:
    """MSE steps (the forward and loss under CPU autocast float16 when ``autocast``) until ``steps`` or the
    first non-finite loss; ``on_nonfinite="dump"`` unless given. ``quiet``: nanprobe's warnings silenced.
    ``clip``: the gradients' norm is clipped to it after ``after_backward`` (unscaled first with a scaler).
    ``batch``: step k trains on rows ``k * batch`` to ``(k + 1) * batch`` (else every step on all of them).
    Returns the monitor and the losses."""
    losses: list[float] = []
    monitor_kwargs.setdefault("on_nonfinite", "dump")
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore")
        with monitor(model, out_dir=out_dir, optimizer=opt, scaler=scaler, **monitor_kwargs) as mon:
            for step in range(steps):
                rows = slice(step * batch, (step + 1) * batch) if batch is not None else slice(None)
                with torch.autocast("cpu", dtype=torch.float16, enabled=autocast):
                    loss = ((model(x[rows]) - y[rows]) ** 2).mean()
                mon.check_loss(loss)
                losses.append(float(loss))
                if not math.isfinite(losses[-1]):
                    break
                opt.zero_grad()
                (scaler.scale(loss) if scaler is not None else loss).backward()
                mon.after_backward()
                if clip is not None:
                    if scaler is not None:
                        scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                mon.step()
    return mon, losses
