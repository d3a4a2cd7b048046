"""Per-layer rows around the origin (from the localization run), and reading the probe's origin."""

from __future__ import annotations

from typing import Any

from nanprobe.diagnosis.localize import CallRow

__all__ = ["layer_rows", "probe_origin"]

WINDOW = 64


def layer_rows(rows: list[CallRow], origin_call: int | None) -> list[dict[str, Any]]:
    """Rows with roles: "origin" for the call that ran the producing op, "propagated" for later (or
    enclosing) non-finite calls, "latent" for earlier non-finite calls; at most ``WINDOW`` rows."""
    ancestors: set[int] = set()
    if origin_call is not None and origin_call < len(rows):
        parent = rows[origin_call].parent
        while parent is not None:
            ancestors.add(parent)
            parent = rows[parent].parent
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
    chosen = rows
    if len(rows) > WINDOW:
        centre = origin_call if origin_call is not None else 0
        start = max(0, min(centre - WINDOW // 4, len(rows) - WINDOW))
        chosen = rows[start:start + WINDOW]
    return [r.to_dict() for r in chosen]


def probe_origin(result: Any) -> dict[str, Any] | None:
    """The probe's origin record as a first_nonfinite-like dict (fallback when the dispatch run saw nothing)."""
    if result is None:
        return None
    rec = getattr(result, "origin", None) or getattr(result, "backward_origin", None)
    if rec is None:
        return None
    return {"module": getattr(rec, "module", ""), "module_type": getattr(rec, "module_type", ""),
            "phase": getattr(rec, "phase", "forward"), "kind": getattr(rec, "kind", None) or "nan",
            "samples": list(getattr(rec, "samples", []) or []), "op": None, "source": None}
