"""Timing harness: variants of one workload timed interleaved in one process, warm-ups first, medians."""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

__all__ = ["Timing", "Variant", "time_interleaved"]


@dataclass
class Variant:
    """A named way of running one step. ``setup`` returns a context manager that is entered once around all
    of this variant's timed steps of a round (installing and removing its instrumentation)."""

    name: str
    step: Callable[[], object]
    setup: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext


@dataclass
class Timing:
    name: str
    samples: list[float] = field(default_factory=list)  # seconds per step, one per round

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def time_interleaved(
    variants: list[Variant], *, rounds: int = 15, steps: int = 10, warmup: int = 3
) -> dict[str, Timing]:
    """Each round runs every variant for ``steps`` steps (variant order rotated per round so drift and
    caches favour none); a round's sample is that variant's mean step time. Returns medians over rounds."""
    timings = {v.name: Timing(v.name) for v in variants}
    for v in variants:
        with v.setup():
            for _ in range(warmup):
                v.step()
    with _gc_paused():
        for r in range(rounds):
            order = variants[r % len(variants):] + variants[: r % len(variants)]
            for v in order:
                with v.setup():
                    start = time.perf_counter()
                    for _ in range(steps):
                        v.step()
                    timings[v.name].samples.append((time.perf_counter() - start) / steps)
    return timings
