"""nanprobe's exception classes. The diagnosis goes in the message."""

from __future__ import annotations

from typing import Any

__all__ = ["GrowthError", "InputError", "ModelRaised", "NanprobeError", "NonFiniteError"]


class NanprobeError(Exception):
    """Base class of every error nanprobe raises on purpose."""


class InputError(NanprobeError, ValueError):
    """The user's input (file, flag, batch, config) is wrong. The CLI maps it to exit status 2."""


class NonFiniteError(NanprobeError, FloatingPointError):
    """A NaN/Inf reached an output. ``diagnosis`` holds the evidence when one was made."""

    def __init__(self, message: str, diagnosis: Any | None = None) -> None:
        super().__init__(message)
        self.diagnosis = diagnosis


class ModelRaised(InputError):
    """The user's model raised on the user's batch (during the control run): a problem with the input, not a
    nanprobe bug. The model's own exception is chained as ``__cause__``."""


class GrowthError(NanprobeError, FloatingPointError):
    """The monitor's early warning with ``on_warning="raise"``: a signal is growing towards overflow."""
