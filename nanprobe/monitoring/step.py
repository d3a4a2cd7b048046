"""What the monitor keeps of a step, and the policy for a non-finite one (shared by the monitor and its
failure handling, so neither imports the other)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from nanprobe.batches import ModelCall
from nanprobe.execution import Mode
from nanprobe.rng import RNGState
from nanprobe.sentinel import FiniteCheck

__all__ = ["Depth", "Detected", "Policy", "StepCall"]


class Policy(str, enum.Enum):
    """What happens at a non-finite step, after the bundle is written."""

    RAISE = "raise"  # NonFiniteError: the run stops
    DUMP = "dump"  # go on
    WARN = "warn"  # go on, with a NonFiniteWarning


class Depth(str, enum.Enum):
    """How closely the monitor watches: ``sentinel`` (one flag per call, no per-module hook) or ``full``
    (also a per-layer snapshot every ``every`` steps, from a separate run)."""

    SENTINEL = "sentinel"
    FULL = "full"


@dataclass
class StepCall:
    """What the monitor keeps of the current step: references to the call's inputs, never its outputs."""

    step: int
    epoch: int | None
    call: ModelCall
    rng: RNGState | None
    mode: Mode
    grad_enabled: bool
    method: str | None = None  # None: forward (``model(...)``)

    @property
    def training(self) -> bool:
        return self.mode is Mode.TRAIN


@dataclass
class Detected:
    """A non-finite value the monitor saw: where (``forward``, ``loss`` or ``backward``), what, in which call."""

    phase: str
    check: FiniteCheck
    call: StepCall | None
