"""Checks on the arguments of the aten ops that losses run through (nll_loss_forward, _ctc_loss,
binary_cross_entropy)."""

from __future__ import annotations

import torch

from nanprobe.knowledge.checks.registry import Evidence, OpCall, check, fmt, rows_where

__all__: list[str] = []

_NLL = ("nll_loss_forward", "nll_loss2d_forward", "nll_loss", "nll_loss2d", "nll_loss_nd")

_MEAN = 1  # at::Reduction::Mean


def _nll(call: OpCall) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int, int] | None:
    """(log_probs, target, weight, reduction, ignore_index) of nll_loss_forward / nll_loss2d_forward."""
    x, target = call.tensor(0, "self"), call.tensor(1, "target")
    if x is None or target is None or target.is_floating_point():
        return None
    weight = call.get(2, "weight")
    return (x, target, weight if isinstance(weight, torch.Tensor) else None, int(call.get(3, "reduction", _MEAN)),
            int(call.get(4, "ignore_index", -100)))


@check("all_ignored_targets", ops=_NLL)
def _all_ignored(call: OpCall) -> Evidence | None:
    found = _nll(call)
    if found is None:
        return None
    _, target, _, reduction, ignore = found
    if reduction != _MEAN or target.numel() == 0 or not bool((target == ignore).all()):
        return None
    return Evidence(f"all {target.numel()} targets equal ignore_index {ignore} and reduction='mean': the mean "
                    "over 0 targets is 0/0")


@check("zero_total_weight", ops=_NLL)
def _zero_total_weight(call: OpCall) -> Evidence | None:
    """Class weights: every counted target's class has weight 0, so the weighted mean divides by 0."""
    found = _nll(call)
    if found is None:
        return None
    _, target, weight, reduction, ignore = found
    kept = target[target != ignore]
    if weight is None or reduction != _MEAN or kept.numel() == 0:
        return None
    total = weight.double()[kept].sum()
    if float(total) != 0:
        return None
    classes = sorted(set(kept.flatten().tolist()))
    return Evidence(f"the targets' classes {classes[:8]} all have weight 0: the weighted mean divides by a total "
                    "weight of 0")


@check("neg_inf_at_target", ops=_NLL)
def _neg_inf_at_target(call: OpCall) -> Evidence | None:
    """The log-probability picked at the target class is -inf (the class was masked, or log(0) upstream)."""
    found = _nll(call)
    if found is None:
        return None
    x, target, _, _, ignore = found
    if x.dim() < 2 or x.shape[0] != target.shape[0]:
        return None
    safe = torch.where(target == ignore, torch.zeros_like(target), target)
    picked = x.gather(1, safe.unsqueeze(1)).squeeze(1)
    mask = (picked == float("-inf")) & (target != ignore)
    if not bool(mask.any()):
        return None
    rows, where = rows_where(mask)
    return Evidence(f"{int(mask.sum())} target(s) whose log-probability is -inf{where}", rows)


def _lengths(value: object) -> list[int] | None:
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.flatten().tolist()]
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return None


@check("ctc_impossible_alignment", ops=["_ctc_loss", "ctc_loss"])
def _ctc_impossible(call: OpCall) -> Evidence | None:
    """_ctc_loss (log_probs, targets, input_lengths, target_lengths, blank, zero_infinity): a sample whose
    target needs more frames (its length plus one blank between each repeated label) than its input has."""
    targets = call.tensor(1, "targets")
    inputs, lengths = _lengths(call.get(2, "input_lengths")), _lengths(call.get(3, "target_lengths"))
    if targets is None or inputs is None or lengths is None or bool(call.get(5, "zero_infinity", False)):
        return None
    bad: list[int] = []
    shown: list[str] = []
    offset = 0
    for i, (frames, length) in enumerate(zip(inputs, lengths)):
        if targets.dim() == 2:
            labels = targets[i, :length]
        else:
            labels = targets[offset:offset + length]
            offset += length
        repeats = int((labels[1:] == labels[:-1]).sum()) if length > 1 else 0
        if length + repeats > frames:
            bad.append(i)
            shown.append(f"sample {i}: target {length} (+{repeats} repeats) > input {frames}")
    if not bad:
        return None
    return Evidence(f"impossible alignment, {'; '.join(shown[:4])}{' ...' if len(shown) > 4 else ''}",
                    tuple(bad))


@check("probability_outside_unit_interval", ops=["binary_cross_entropy"])
def _bce_range(call: OpCall) -> Evidence | None:
    """binary_cross_entropy refuses inputs outside [0, 1], NaN included (a NaN from upstream reads as an
    out-of-range probability)."""
    p = call.tensor(0, "self")
    if p is None or not p.is_floating_point() or p.numel() == 0:
        return None
    mask = (p < 0) | (p > 1) | torch.isnan(p)
    if not bool(mask.any()):
        return None
    rows, where = rows_where(mask)
    nan = int(torch.isnan(p).sum())
    what = f"{nan} NaN" if nan else f"values up to {fmt(p[mask].abs().max())}"
    return Evidence(f"probabilities outside [0, 1] ({what}): binary_cross_entropy raises{where}", rows)
