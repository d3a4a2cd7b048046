"""Capture and restore random-number-generator state, so a re-execution computes exactly the same thing."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["RNGState", "forked_rng"]


@dataclass
class RNGState:
    """torch CPU (and, when initialised, every CUDA device's) generator state, plus Python's and numpy's."""

    torch_cpu: torch.Tensor
    torch_cuda: list[torch.Tensor] = field(default_factory=list)
    python: Any = None
    numpy: Any = None

    @classmethod
    def capture(cls, *, host: bool = False) -> RNGState:
        """torch's generators (a few microseconds); with ``host`` also Python's and numpy's (~100 us more),
        which a model's forward rarely draws from."""
        cuda: list[torch.Tensor] = []
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            cuda = list(torch.cuda.get_rng_state_all())
        return cls(
            torch_cpu=torch.get_rng_state(),  # already a copy
            torch_cuda=cuda,
            python=random.getstate() if host else None,
            numpy=np.random.get_state() if host else None,
        )

    def restore(self) -> None:
        torch.set_rng_state(self.torch_cpu)
        if self.torch_cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.torch_cuda)
        if self.python is not None:
            random.setstate(self.python)
        if self.numpy is not None:
            np.random.set_state(self.numpy)

    def to_dict(self) -> dict[str, Any]:
        """Plain types and tensors only, so ``torch.load(weights_only=True)`` can read it back."""
        out: dict[str, Any] = {"torch_cpu": self.torch_cpu, "torch_cuda": list(self.torch_cuda)}
        if self.python is not None:
            version, internal, gauss = self.python
            out["python"] = [version, list(internal), gauss]
        if self.numpy is not None:
            name, keys, pos, has_gauss, cached = self.numpy
            out["numpy"] = [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos),
                            int(has_gauss), float(cached)]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RNGState:
        python = None
        if data.get("python") is not None:
            version, internal, gauss = data["python"]
            python = (version, tuple(int(v) for v in internal), gauss)
        numpy_state = None
        if data.get("numpy") is not None:
            name, keys, pos, has_gauss, cached = data["numpy"]
            numpy_state = (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached)
        return cls(torch_cpu=data["torch_cpu"], torch_cuda=list(data.get("torch_cuda", [])),
                   python=python, numpy=numpy_state)


@contextlib.contextmanager
def forked_rng(state: RNGState | None = None) -> Iterator[RNGState]:
    """Run a block from ``state`` (or from the current state) and put the caller's RNG back afterwards."""
    saved = RNGState.capture(host=True)
    try:
        if state is not None:
            state.restore()
        yield state if state is not None else saved
    finally:
        saved.restore()
