"""Weighing evidence: each candidate cause collects evidence for and against it, and the best-supported wins.

Evidence has a strength, by what kind of observation it is, not by which rule found it:

=========  ====  ========================================================================================
DIRECT     100   the value was already non-finite before any op ran (the batch, a parameter or buffer)
MEASURED    80   a known condition measured on the producing op's actual inputs (log of 0 in row 2,
                 squared values past float32's max, every key of a query masked)
OP_FACT     60   what the op is and how its inputs compare with the dtype's limits, without a measured
                 condition (an Inf out of finite inputs near ``finfo.max``)
REPLAY      40   a controlled replay flipped the outcome (train mode, dropout 0, upcast, fast path off ...)
PRIOR       20   the op is known to fail this way (the knowledge table), nothing measured
=========  ====  ========================================================================================

A candidate's score is its strongest support minus its strongest contradiction; it needs support to be
considered at all. Ties go to the more specific cause (the contract's order). Every other candidate with
support is listed as rejected, with the reason it lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nanprobe.report import CAUSES

__all__ = ["DIRECT", "MEASURED", "OP_FACT", "PRIOR", "REPLAY", "Candidate", "choose"]

DIRECT = 100
MEASURED = 80
OP_FACT = 60
REPLAY = 40
PRIOR = 20


@dataclass
class Candidate:
    """One possible cause, the evidence for and against it, and what the verdict says if it wins."""

    cause: str
    summary: str = ""
    fix: str = ""
    support: list[tuple[int, str]] = field(default_factory=list)
    against: list[tuple[int, str]] = field(default_factory=list)

    def add(self, strength: int, text: str) -> Candidate:
        self.support.append((strength, text))
        return self

    def oppose(self, strength: int, text: str) -> Candidate:
        self.against.append((strength, text))
        return self

    @property
    def strength(self) -> int:
        return max((s for s, _ in self.support), default=0)

    @property
    def score(self) -> int:
        if not self.support:
            return 0
        return self.strength - max((s for s, _ in self.against), default=0)

    def best(self) -> str:
        return max(self.support, key=lambda p: p[0])[1] if self.support else ""


def _specificity(cause: str) -> int:
    return -CAUSES.index(cause) if cause in CAUSES else -len(CAUSES)


def choose(candidates: list[Candidate]) -> tuple[Candidate, list[str]]:
    """The winning candidate and one line per rejected candidate that had support."""
    ranked = sorted((c for c in candidates if c.support), key=lambda c: (c.score, _specificity(c.cause)),
                    reverse=True)
    winner = ranked[0]
    rejected = []
    for c in ranked[1:]:
        if c.against and max(s for s, _ in c.against) >= c.strength:
            why = f"contradicted: {max(c.against, key=lambda p: p[0])[1]}"
        else:
            why = f"weaker evidence ({c.best()}) than for {winner.cause}"
        rejected.append(f"rejected {c.cause}: {why}")
    return winner, rejected
