"""What an optimizer's step does to its parameters, from the knowledge table's optimizer entries: the
conditions under which finite gradients come out as non-finite parameters (an eps that is 0 in float16), tested
on each parameter, its group's hyperparameters and its optimizer state. Nothing is written: the state is read.

Used twice: before the run goes wrong (the monitor warns when an attached optimizer's hyperparameters cannot
work for its parameters' dtype), and after (a ``nonfinite_parameter`` verdict names the step that made them).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nanprobe.knowledge import Condition, Entry, Evidence, entry_for_optimizer, run_check

__all__ = ["OptimizerFinding", "SavedOptimizer", "hazard_message", "nonfinite_state", "optimizer_entry",
           "optimizer_findings", "optimizer_name", "saved_optimizer"]


@dataclass(frozen=True)
class OptimizerFinding:
    """A table condition that holds for one parameter of an optimizer."""

    optimizer: str
    parameter: str
    condition: Condition
    evidence: Evidence

    def where(self) -> str:
        return f"{self.optimizer} ({self.parameter})"


# the state each family keeps (a saved state dict names no class): the most telling key first
_FAMILIES = (("exp_inf", "Adamax"), ("exp_avg_sq", "Adam"), ("square_avg", "RMSprop"), ("sum", "Adagrad"),
             ("acc_delta", "Adadelta"), ("momentum_buffer", "SGD"))


@dataclass
class SavedOptimizer:
    """An optimizer's saved ``state_dict()`` (from a checkpoint) laid over the model it trained: the same
    ``param_groups``/``state`` shape a live optimizer has, its class inferred from the state it keeps."""

    name: str
    param_groups: list[dict[str, Any]]
    state: dict[Any, dict[str, Any]]


def optimizer_name(optimizer: Any) -> str:
    return optimizer.name if isinstance(optimizer, SavedOptimizer) else type(optimizer).__name__


def optimizer_entry(optimizer: Any) -> Entry | None:
    """The table's entry for ``optimizer``: its class's, or the nearest base class's (a user's ``MyAdam(Adam)``
    steps as Adam does unless it says otherwise)."""
    if isinstance(optimizer, SavedOptimizer):
        return entry_for_optimizer(optimizer.name)
    return next((e for cls in type(optimizer).__mro__ if (e := entry_for_optimizer(cls.__name__)) is not None), None)


def saved_optimizer(state_dict: Any, model: nn.Module) -> SavedOptimizer | None:
    """``state_dict`` (``optimizer.state_dict()``) matched to ``model``'s parameters in order, as torch numbers
    them; None when it is not one, or when any state tensor's shape disagrees with its parameter's (another
    parameter order, or an optimizer over part of the model)."""
    try:
        groups, state = state_dict["param_groups"], state_dict["state"]
        params = list(model.parameters())
        out_groups, out_state = [], {}
        for group in groups:
            ids = list(group["params"])
            if any(not isinstance(i, int) or not 0 <= i < len(params) for i in ids):
                return None
            out_groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": [params[i] for i in ids]})
            for i in ids:
                saved = dict(state.get(i, {}))
                if any(isinstance(v, torch.Tensor) and v.dim() and v.shape != params[i].shape for v in saved.values()):
                    return None
                out_state[params[i]] = saved
        keys = {k for v in out_state.values() for k in v}
        name = next((n for key, n in _FAMILIES if key in keys), "an optimizer")
        return SavedOptimizer(name, out_groups, out_state)
    except (KeyError, TypeError, AttributeError):
        return None


def optimizer_findings(optimizer: Any, model: nn.Module,
                       names: Collection[str] | None = None) -> list[OptimizerFinding]:
    """The conditions of ``optimizer``'s table entry that hold for ``model``'s parameters (those in ``names``
    only, when given), one finding per parameter and condition; [] for an optimizer the table does not know,
    and when reading it fails (a failure here never becomes the caller's)."""
    try:
        return _findings(optimizer, model, names)
    except Exception:
        return []


def _findings(optimizer: Any, model: nn.Module, names: Collection[str] | None) -> list[OptimizerFinding]:
    kind = optimizer_name(optimizer)
    entry = optimizer_entry(optimizer)
    groups = getattr(optimizer, "param_groups", None)
    if entry is None or entry.safe or not isinstance(groups, list):
        return []
    state = getattr(optimizer, "state", {})
    named = {id(p): n for n, p in model.named_parameters()}
    found = []
    for group in groups:
        settings = {k: v for k, v in group.items() if k != "params"}
        for param in group.get("params", []):
            name = named.get(id(param))
            if name is None or (names is not None and name not in names):
                continue
            for condition in entry.conditions:
                if condition.check is None:
                    continue
                evidence = run_check(condition.check, kind, (param, settings, state.get(param, {})))
                if evidence is not None:
                    found.append(OptimizerFinding(kind, name, condition, evidence))
    return found


def nonfinite_state(optimizer: Any, model: nn.Module, names: Collection[str]) -> list[str]:
    """For the parameters in ``names``: which of their optimizer state tensors (moments, sums) hold NaN/Inf,
    one phrase each. Any optimizer. Reloading the weights alone does not help then: the first step after the
    reload writes the state's NaN back into them."""
    try:
        kind = optimizer_name(optimizer)
        named = {id(p): n for n, p in model.named_parameters()}
        found = []
        for group in getattr(optimizer, "param_groups", None) or []:
            for param in group.get("params", []):
                name = named.get(id(param))
                if name is None or name not in names:
                    continue
                for key, value in getattr(optimizer, "state", {}).get(param, {}).items():
                    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel():
                        bad = int((~torch.isfinite(value)).sum())
                        if bad:
                            found.append(f"{kind}'s {key} of {name} holds {bad} non-finite value{'s' * (bad > 1)}")
        return found
    except Exception:
        return []


def hazard_message(findings: list[OptimizerFinding]) -> str | None:
    """One line for a run about to start: which parameters a condition threatens, and the fix."""
    if not findings:
        return None
    first = findings[0]
    names = sorted({f.parameter for f in findings})
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return (f"{first.optimizer}'s step can turn finite gradients into NaN/Inf parameters ({shown}): "
            f"{first.evidence.text}. Fix: {first.condition.fix_text(where=first.optimizer)}")
