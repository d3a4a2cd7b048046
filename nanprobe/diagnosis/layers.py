"""Per-layer rows around the origin (from the localization run), with their roles."""

from __future__ import annotations

from nanprobe.report import LayerRow

__all__ = ["WINDOW", "assign_layer_roles"]

WINDOW = 64


def assign_layer_roles(rows: list[LayerRow], parents: list[int | None], origin_call: int | None
                       ) -> list[LayerRow]:
    """Set ``role`` on every row: ``origin`` for the call that ran the producing op, ``propagated`` for later
    (or enclosing) non-finite calls, ``latent`` for earlier non-finite calls. Returns at most ``WINDOW`` rows
    around the origin."""
    ancestors: set[int] = set()
    if origin_call is not None and origin_call < len(rows):
        parent = parents[origin_call]
        while parent is not None:
            ancestors.add(parent)
            parent = parents[parent]
    for row in rows:
        row.role = None
        if not row.nonfinite:
            continue
        if origin_call is None:
            row.role = "latent"
        elif row.index == origin_call:
            row.role = "origin"
        elif row.index > origin_call or row.index in ancestors:
            row.role = "propagated"
        else:
            row.role = "latent"
    if len(rows) <= WINDOW:
        return list(rows)
    centre = origin_call if origin_call is not None else 0
    start = max(0, min(centre - WINDOW // 4, len(rows) - WINDOW))
    return rows[start:start + WINDOW]
