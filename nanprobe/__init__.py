"""nanprobe: find where a PyTorch model goes NaN, why, and keep it from coming back."""

from __future__ import annotations

from nanprobe._version import __version__
from nanprobe.errors import InputError, NanprobeError, NonFiniteError

__all__ = ["InputError", "NanprobeError", "NonFiniteError", "__version__"]
