"""The table's record types and vocabularies: what one entry and one condition may say."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CAUSES", "KINDS", "OUTCOMES", "PHASES", "PLACEHOLDERS", "Condition", "Entry", "covers", "union"]

# The contract's `cause` vocabulary (the JSON report's verdict.cause).
CAUSES = (
    "nonfinite_input",
    "nonfinite_parameter",
    "fully_masked_attention",
    "dtype_overflow",
    "numerical_domain",
    "dropout_dependent",
    "batch_size_dependent",
    "mode_dependent",
    "training_divergence",
    "unknown",
)
KINDS = ("op", "loss", "optimizer")
# An optimizer's conditions happen in its "step": finite gradients in, non-finite parameters out.
PHASES = ("forward", "backward", "both", "step")
# What torch does when the condition holds: NaN, +-Inf, either (depends on the values), or an exception.
OUTCOMES = ("nan", "inf", "nonfinite", "error")
# Fix texts may name these; everything else in braces is an error.
PLACEHOLDERS = ("where", "who")


def covers(phase: str, other: str) -> bool:
    """Whether ``phase`` includes ``other`` ("both" includes forward and backward, not an optimizer's step)."""
    return phase == other or (phase == "both" and other in ("forward", "backward"))


def union(phases: list[str]) -> str:
    """The smallest phase that includes all of ``phases``."""
    if phases and all(p == "step" for p in phases):
        return "step"
    seen = set()
    for p in phases:
        seen.update(("forward", "backward") if p == "both" else (p,))
    if seen == {"forward"}:
        return "forward"
    if seen == {"backward"}:
        return "backward"
    return "both"


@dataclass(frozen=True)
class Condition:
    """One circumstance in which an op or loss goes non-finite (or raises), and what to do about it.

    ``check`` names a function in :mod:`nanprobe.knowledge.checks` that tells, from the op's actual
    arguments, whether the condition holds."""

    id: str
    when: str
    phase: str
    cause: str
    fix: str
    outcome: str = "nonfinite"
    check: str | None = None

    def fix_text(self, where: str = "this op", who: str = "the batch") -> str:
        """The fix with its placeholders filled: ``where`` the op/module location, ``who`` the samples."""
        return self.fix.format(where=where, who=who)

    def applies_to(self, phase: str) -> bool:
        return covers(self.phase, phase)


@dataclass(frozen=True)
class Entry:
    """Everything the table knows about one aten op (``kind == "op"``), one ``torch.nn`` loss or one
    ``torch.optim`` optimizer (``kind == "optimizer"``, its other classes under ``aliases``).

    An entry without conditions records a point that torch handles (finite), so that nobody writes a
    rule for it; ``note`` then says what torch does there."""

    name: str
    kind: str
    phase: str
    conditions: tuple[Condition, ...]
    aliases: tuple[str, ...] = ()
    functional: tuple[str, ...] = ()
    aten_ops: tuple[str, ...] = ()
    note: str | None = None
    step_follows_gradient: bool = False
    """Optimizers: the step is the learning rate times the gradient (or a momentum sum of them), so clipping the
    gradient bounds the step (SGD); not Adam's, whose step is about the learning rate per value whatever the
    gradient's size."""

    @property
    def safe(self) -> bool:
        """True when the entry documents a point torch keeps finite (no conditions)."""
        return not self.conditions

    def condition(self, condition_id: str) -> Condition:
        for c in self.conditions:
            if c.id == condition_id:
                return c
        raise KeyError(f"{self.name} has no condition {condition_id!r}")

    def conditions_for(self, phase: str) -> tuple[Condition, ...]:
        """The conditions that can make this entry non-finite in ``phase`` ("forward" or "backward")."""
        return tuple(c for c in self.conditions if c.applies_to(phase))

    @property
    def checks(self) -> tuple[str, ...]:
        return tuple(c.check for c in self.conditions if c.check)
