"""Where to fix an overflow: the layer whose output range exploded over its input's, and the parameter of it
whose magnitude stands out from its peers (``verdict.root``).

The first non-finite value is often only where an explosion ended: a LayerNorm whose variance overflows
because a block several layers earlier multiplied its input by 1e37. Walking the recorded per-layer ranges
back from the origin finds the call whose output |max| is orders of magnitude above its input's.
"""

from __future__ import annotations

import math

from torch import nn

from nanprobe.report import INPUT, LayerRow, Root
from nanprobe.scan import peer_outliers

__all__ = ["JUMP", "find_root"]

JUMP = 1e3
"""An output |max| this many times the input's is an explosion."""
LARGE = 1e6
"""...and it must also be large in absolute terms (a 1e3 gain from 1e-6 to 1e-3 is no explosion)."""


def _leaves(rows: list[LayerRow], parents: list[int | None]) -> set[int]:
    has_children = {p for p in parents if p is not None}
    return {r.index for r in rows if r.index not in has_children}


def find_root(rows: list[LayerRow], parents: list[int | None], origin_call: int | None, model: nn.Module
              ) -> Root | None:
    """The exploding layer up to the origin (and its standout parameter), or the batch itself when it already
    carries the huge values; ``None`` when no layer's range jumped."""
    if not rows:
        return None
    end = origin_call if origin_call is not None else len(rows) - 1
    leaves = _leaves(rows, parents)
    best: tuple[float, LayerRow] | None = None
    for row in rows[: end + 1]:
        if row.index not in leaves or row.absmax is None or row.in_absmax is None or row.absmax < LARGE:
            continue
        gain = row.absmax / max(row.in_absmax, 1e-30)
        if gain >= JUMP and (best is None or gain > best[0]):
            best = (gain, row)
    if best is None:
        first = rows[0].in_absmax
        if first is not None and first >= LARGE:
            return Root(module=INPUT, evidence=f"the batch itself reaches |max| {first:.3g}: no layer made it "
                                               "explode")
        return None
    gain, row = best
    root = Root(module=row.module, evidence=f"output |max| {row.absmax:.3g} from inputs |max| "
                                            f"{row.in_absmax:.3g} ({math.log10(gain):.0f} orders of magnitude)")
    try:
        module = model.get_submodule(row.module) if row.module and not row.module.startswith("<") else None
    except AttributeError:
        module = None
    if module is not None:
        own = {f"{row.module}.{n}" for n, _ in module.named_parameters(recurse=False)}
        for outlier in peer_outliers(model.named_parameters()):
            if outlier.name in own:
                root.parameter = outlier.name
                root.evidence += f"; {outlier.describe()}"
                break
    return root
