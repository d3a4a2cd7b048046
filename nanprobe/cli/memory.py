"""Hand freed memory back to the operating system in the command-line process.

glibc serves large allocations from its heap unless they exceed a threshold that grows as big blocks are
freed; the freed memory of one replay then stays in the process and peak RSS ratchets up pass after pass.
A fixed 128 KiB threshold makes every tensor-sized allocation its own mapping, returned when it is freed.
Only the CLI does this (it owns its process); the library never changes a user's allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["release_freed_memory"]

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
_THRESHOLD = 128 * 1024


def release_freed_memory() -> bool:
    """Set glibc's mmap threshold (Linux only; a no-op elsewhere). True when it was set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _THRESHOLD))
    except (OSError, AttributeError):  # not glibc (musl), or no mallopt
        return False
