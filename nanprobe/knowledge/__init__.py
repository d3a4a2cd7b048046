"""What makes torch ops, losses and optimizer steps non-finite, as data: a validated table (``table.yaml``) of
entries and conditions, checks that test a condition on an op's actual arguments, and lookups by any
spelling of a name::

    entry = entry_for_op("SqrtBackward0")            # the sqrt entry
    for condition in entry.conditions_for("backward"):
        if condition.check and run_check(condition.check, "aten.sqrt", args):
            print(condition.cause, condition.fix_text(where="sqrt in encoder", who="sample 2"))

May import: only torch, PyYAML and ``nanprobe.kinds``/``errors``. Imported by: the diagnosis (its verdict),
the docs generator.
"""

from __future__ import annotations

from nanprobe.knowledge.checks import CHECKS, Evidence, OpCall, run_check
from nanprobe.knowledge.model import CAUSES, Condition, Entry
from nanprobe.knowledge.table import Table, TableError, load_table, parse_table

__all__ = [
    "CAUSES",
    "CHECKS",
    "Condition",
    "Entry",
    "Evidence",
    "OpCall",
    "Table",
    "TableError",
    "entry_for_loss",
    "entry_for_op",
    "entry_for_optimizer",
    "load_table",
    "loss_for_op",
    "parse_table",
    "run_check",
]


def entry_for_op(op: str) -> Entry | None:
    """The table's entry for an aten op, in any spelling (``aten.log``, ``log_``, ``LogBackward0``)."""
    return load_table().entry_for_op(op)


def entry_for_loss(name: str) -> Entry | None:
    """The table's entry for a loss, by class (``CrossEntropyLoss``) or functional name (``cross_entropy``)."""
    return load_table().entry_for_loss(name)


def entry_for_optimizer(name: str) -> Entry | None:
    """The table's entry for a ``torch.optim`` optimizer class (``Adam``, ``AdamW``, ...)."""
    return load_table().entry_for_optimizer(name)


def loss_for_op(op: str) -> tuple[Entry, ...]:
    """The losses whose computation runs through ``op``."""
    return load_table().loss_for_op(op)
