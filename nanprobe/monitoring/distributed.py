"""Agreeing across ranks: one small all_reduce per step says which ranks saw a non-finite value."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

__all__ = ["RankSync", "rank_and_world"]


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the default process group, or (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class RankSync:
    """Every rank calls :meth:`exchange` at the same point of every step (a collective: all ranks must).

    The exchanged tensor has one int per rank: 1 where that rank saw a non-finite value. One ``all_reduce``
    with MAX tells every rank both *whether* and *which*, and reading it back is the step's one host sync.
    """

    def __init__(self, group: Any | None = None) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("RankSync needs an initialised torch.distributed process group")
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        backend = str(dist.get_backend(group)).lower()
        if "nccl" in backend and torch.cuda.is_available():
            self.device = torch.device("cuda", torch.cuda.current_device())
        else:
            self.device = torch.device("cpu")
        self.exchanges = 0

    @classmethod
    def detect(cls, enabled: bool | None = None, group: Any | None = None) -> RankSync | None:
        """A RankSync when ``enabled`` (None: when a process group of more than one rank is initialised)."""
        initialised = dist.is_available() and dist.is_initialized()
        if enabled is None:
            enabled = initialised and dist.get_world_size(group) > 1
        if not enabled:
            return None
        if not initialised:
            raise RuntimeError("distributed=True but torch.distributed is not initialised")
        return cls(group)

    def exchange(self, local: bool | torch.Tensor) -> list[int]:
        """The ranks (sorted) that flagged this step. ``local`` may be a bool tensor on any device (True = saw
        a non-finite value); it is not read on the host before the collective."""
        flags = torch.zeros(self.world_size, dtype=torch.int32, device=self.device)
        if isinstance(local, torch.Tensor):
            flags[self.rank] = local.reshape(()).to(device=self.device, dtype=torch.int32)
        elif local:
            flags[self.rank] = 1
        dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self.group)
        self.exchanges += 1
        return [i for i, v in enumerate(flags.tolist()) if v]
