"""Machine checks for the table's conditions.

Each check is a pure function over an op's actual arguments (as the aten op received them) that returns
:class:`Evidence` when its condition holds on those values, else None: ``run_check("input_nonpositive",
"aten.log", (x,))`` -> ``Evidence("min input 0.0 <= 0 in rows [2]", rows=(2,))``. The table names them in
its conditions' ``check`` field. An optimizer's check reads ``OpCall(<optimizer class>, (parameter, param_group,
state))``: one parameter, its group's hyperparameters and its optimizer state."""

from __future__ import annotations

from nanprobe.knowledge.checks import domain, linalg, losses, optimizers, overflow, reductions  # noqa: F401
from nanprobe.knowledge.checks.registry import CHECKS, Evidence, OpCall, run_check

__all__ = ["CHECKS", "Evidence", "OpCall", "run_check"]
