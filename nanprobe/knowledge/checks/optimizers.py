"""Checks for optimizer steps: ``OpCall(<optimizer class name>, (parameter, param_group, state))``."""

from __future__ import annotations

import torch

from nanprobe.knowledge.checks.registry import Evidence, OpCall, check

SECOND_MOMENTS = ("exp_avg_sq", "exp_inf", "square_avg", "sum")
"""The state an adaptive optimizer divides by (Adam/AdamW/NAdam/RAdam, Adamax, RMSprop, Adagrad)."""


@check("eps_flushes_to_zero")
def eps_flushes_to_zero(call: OpCall) -> Evidence | None:
    """The group's eps rounds to 0 in the parameter's dtype, so ``sqrt(state) + eps`` is 0 wherever the
    second moment is (a zero gradient, or one whose square underflows). With a non-finite parameter, how many
    of its non-finite values sit where that second moment is 0."""
    param, group, state = call.get(0, "param"), call.get(1, "group") or {}, call.get(2, "state") or {}
    eps = group.get("eps")
    if not isinstance(param, torch.Tensor) or not param.is_floating_point() or not isinstance(eps, float) or eps <= 0:
        return None
    moment = next(((k, v) for k, v in state.items() if k in SECOND_MOMENTS and isinstance(v, torch.Tensor)
                   and v.shape == param.shape), None)
    # the dtype the step ran in: its state's (a checkpoint's weights may have been loaded into another dtype)
    dtype = moment[1].dtype if moment is not None and moment[1].is_floating_point() else param.dtype
    if torch.tensor(eps, dtype=dtype).item() != 0.0:
        return None
    name = str(dtype).removeprefix("torch.")
    tiny = torch.finfo(dtype).smallest_normal * torch.finfo(dtype).eps  # the smallest subnormal
    text = f"eps {eps:g} is 0 in {name} (its smallest positive value is {tiny:.3g})"
    if moment is not None:  # no state before the first step: nothing to count (and no pass over the weights)
        key, value = moment
        bad = ~torch.isfinite(param.detach())
        if bool(bad.any()):
            zero = int((bad & (value.to(bad.device) == 0)).sum())  # a saved state may sit on the CPU
            text += (f"; {zero} of the {int(bad.sum())} non-finite values sit where {key} is 0 (their gradient was "
                     f"0 or its square underflowed in {name})")
    return Evidence(text)
