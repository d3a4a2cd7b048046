"""Minimal torch.distributed helpers (CPU / gloo) for the trainer; single-process when not launched by torchrun."""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
import torch.distributed as dist

from .metrics import EvalResult, metric_names

__all__ = ["Dist", "all_reduce_grads", "merge_results"]


class Dist:
    """Rank / world size; initialises a gloo process group when ``WORLD_SIZE`` > 1."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self._owns_group = False
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("gloo")
            self._owns_group = True

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast_params(self, module: torch.nn.Module) -> None:
        if self.enabled:
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, src=0)

    def close(self) -> None:
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()


def all_reduce_grads(params: Iterable[torch.nn.Parameter], world: int) -> None:
    """Average gradients over ranks in one flat all-reduce (missing grads count as zeros)."""
    params = [p for p in params if p.requires_grad]
    if world <= 1 or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def merge_results(result: EvalResult, world: int) -> EvalResult:
    """Sum per-rank results (metric means are re-weighted by sample counts); gather non-finite user ids."""
    if world <= 1:
        return result
    names = metric_names()
    n = result.num_samples
    vec = torch.tensor([result.metrics[k] * n for k in names]
                       + [n, result.num_batches, result.nonfinite_samples, result.nonfinite_batches],
                       dtype=torch.float64)
    dist.all_reduce(vec)
    users: list[list[int]] = [[] for _ in range(world)]
    dist.all_gather_object(users, list(result.nonfinite_user_ids))
    total = int(vec[len(names)])
    return EvalResult(
        name=result.name,
        metrics={k: (float(vec[i]) / total if total else float("nan")) for i, k in enumerate(names)},
        num_samples=total, num_batches=int(vec[len(names) + 1]), nonfinite_samples=int(vec[len(names) + 2]),
        nonfinite_batches=int(vec[len(names) + 3]), nonfinite_user_ids=sorted({u for part in users for u in part}),
        baseline=result.baseline,
    )
