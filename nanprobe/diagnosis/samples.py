"""Describe failing samples: padding, fully masked query rows, non-finite or extreme features, bad indices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from nanprobe.batches import batch_size
from nanprobe.sentinel import tensor_leaves

__all__ = ["describe_samples", "masked_positions", "ranges"]


def ranges(values: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5"."""
    vals = sorted(set(values))
    parts: list[str] = []
    start = prev = None
    for v in vals:
        if start is None:
            start = prev = v
        elif v == prev + 1:
            prev = v
        else:
            parts.append(f"{start}-{prev}" if start != prev else f"{start}")
            start = prev = v
    if start is not None:
        parts.append(f"{start}-{prev}" if start != prev else f"{start}")
    return ", ".join(parts)


def masked_positions(attention: list[dict[str, Any]], samples: Sequence[int]) -> dict[int, dict[str, Any]]:
    """sample -> {"positions": [...], "modules": [...], "ops": [...]} from the attention facts."""
    found: dict[int, dict[str, Any]] = {}
    wanted = set(samples)
    for fact in attention:
        for s, pos in fact["rows"].items():
            if s not in wanted:
                continue
            entry = found.setdefault(s, {"positions": set(), "modules": [], "ops": []})
            entry["positions"].update(pos)
            if fact["module"] not in entry["modules"]:
                entry["modules"].append(fact["module"])
            if fact["op"] not in entry["ops"]:
                entry["ops"].append(fact["op"])
    for entry in found.values():
        entry["positions"] = sorted(entry["positions"])
    return found


def _all_leaves(obj: Any, prefix: str = "batch") -> list[tuple[str, torch.Tensor]]:
    found: list[tuple[str, torch.Tensor]] = []

    def walk(o: Any, path: str) -> None:
        if isinstance(o, torch.Tensor):
            found.append((path, o))
        elif isinstance(o, dict):
            for k, v in o.items():
                walk(v, f"{k}" if path == prefix else f"{path}.{k}")
        elif isinstance(o, (tuple, list)):
            for i, v in enumerate(o):
                walk(v, f"{path}[{i}]")
        elif hasattr(o, "args") and hasattr(o, "kwargs"):
            walk(tuple(o.args), path)
            walk(dict(o.kwargs), path)

    walk(obj, prefix)
    return found


def describe_samples(batch: Any, samples: Sequence[int], model: nn.Module,
                     attention: list[dict[str, Any]], limit: int = 16) -> list[dict[str, Any]]:
    """One entry per sample (at most ``limit``) with human-readable notes."""
    size = batch_size(batch)
    if size is None:
        return []
    embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    pad_ids = {int(m.padding_idx) for m in embeddings if m.padding_idx is not None} or {0}
    vocab = max((m.num_embeddings for m in embeddings), default=None)  # beyond every table: surely wrong
    leaves = [(p, t) for p, t in _all_leaves(batch) if t.dim() > 0 and t.shape[0] == size]
    floats = [(p, t) for p, t in tensor_leaves(batch, "batch") if t.dim() > 0 and t.shape[0] == size]
    masked = masked_positions(attention, samples)
    out: list[dict[str, Any]] = []
    for s in list(samples)[:limit]:
        notes: list[str] = []
        entry: dict[str, Any] = {"sample": int(s)}
        for path, t in leaves:
            row = t[s]
            if t.dtype == torch.bool and row.dim() >= 1 and row.numel():
                share = float(row.float().mean())
                if share == 1.0:
                    notes.append(f"{path}: all {row.numel()} positions set (fully masked / all padding)")
                elif share >= 0.75:
                    notes.append(f"{path}: {int(row.sum())} of {row.numel()} positions set (mostly padding)")
            elif not t.is_floating_point() and not t.is_complex() and row.numel() > 1:
                pads = sum(int((row == p).sum()) for p in pad_ids)
                if pads == row.numel():
                    notes.append(f"{path}: all {row.numel()} tokens are padding (id {min(pad_ids)})")
                elif pads >= 0.75 * row.numel():
                    notes.append(f"{path}: {pads} of {row.numel()} tokens are padding (mostly padding)")
                if vocab is not None and row.numel() and (int(row.max()) >= vocab or int(row.min()) < 0):
                    notes.append(f"{path}: index out of range [0, {vocab}) "
                                 f"(min {int(row.min())}, max {int(row.max())})")
        for path, t in floats:
            row = t[s].detach()
            bad = ~torch.isfinite(row)
            if bool(bad.any()):
                notes.append(f"{path}: {int(torch.isnan(row).sum())} NaN, {int(torch.isinf(row).sum())} Inf values")
                continue
            if row.numel() and t.numel() > row.numel():
                amax = float(row.abs().max())
                typical = float(t.detach().abs().reshape(size, -1).amax(dim=1).median())
                if amax > 1e4 and amax > 100 * max(typical, 1e-12):
                    notes.append(f"{path}: extreme magnitude max|x| = {amax:.3g} (batch median {typical:.3g})")
        if s in masked:
            m = masked[s]
            notes.append(f"no key to attend to at query positions {ranges(m['positions'])} "
                         f"({', '.join(x or '<root>' for x in m['modules'])})")
            entry["masked_positions"] = m["positions"]
        entry["notes"] = notes
        out.append(entry)
    return out
