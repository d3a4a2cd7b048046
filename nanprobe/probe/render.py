"""Rich rendering of a :class:`ProbeResult`: a status line and the calls leading up to the origin."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rich.table import Table
from rich.text import Text

from nanprobe.probe.records import INPUT, CallRecord
from nanprobe.report import display_name

ProbeResult = Any  # nanprobe.probe.result.ProbeResult, which renders itself through this module

__all__ = ["render_result"]

BEFORE = 12
AFTER = 3
_STYLES = {"origin": "bold red", "propagated": "red", "latent": "yellow"}


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def _window(result: ProbeResult) -> list[CallRecord]:
    origin = result.origin or result.backward_origin
    records = result.records
    if origin is None:
        return records[-BEFORE:]
    if origin.module == INPUT:
        same = [r for r in records if r.step == origin.step]
        return [origin, *same[:BEFORE]]
    at = next((i for i, r in enumerate(records) if r is origin), None)
    if at is None:
        return [*records[-BEFORE:], origin]
    return records[max(0, at - BEFORE): at + AFTER + 1]


def _headline(result: ProbeResult) -> Text:
    if result.status == "clean":
        text = Text("status: clean", style="bold green")
        if result.latent:
            text.append(f" ({len(result.latent)} latent non-finite producer(s), none reached an output)",
                        style="yellow")
        return text
    text = Text("status: nonfinite", style="bold red")
    first = result.first_nonfinite()
    if first is not None:
        if first.module == INPUT:
            where = "the batch itself (<input>)"
        else:
            where = f"{display_name(first.module)} ({first.module_type})"
        text.append(f" - first produced by {where}, {first.phase}, {first.kind}; samples {first.samples}")
    return text


def render_result(result: ProbeResult) -> Iterator[object]:
    yield _headline(result)
    if result.nonfinite_parameters:
        yield Text("non-finite parameters: " + ", ".join(result.nonfinite_parameters), style="red")
    if result.input_nonfinite:
        info = result.input_nonfinite
        yield Text(f"non-finite input: {', '.join(info['paths'])} ({info['kind']}), rows {info['samples']}",
                   style="red")
    table = Table(title="calls leading up to the origin", title_justify="left")
    for col, justify in (("#", "right"), ("module", "left"), ("type", "left"), ("phase", "left"),
                         ("min", "right"), ("max", "right"), ("absmax", "right"), ("nan", "right"),
                         ("inf", "right"), ("role", "left")):
        table.add_column(col, justify=justify, overflow="fold", no_wrap=col != "module")  # type: ignore[arg-type]
    origin = result.origin or result.backward_origin
    for rec in _window(result):
        s = rec.summary()
        role = rec.role or ""
        marker = "<< origin" if rec is origin else role
        style = "bold red reverse" if rec is origin else _STYLES.get(role, "")
        # module names and types are the user's text: Text cells, so rich never reads them as markup
        table.add_row(str(rec.index), Text(rec.label), Text(rec.module_type), rec.phase, _fmt(s["min"]),
                      _fmt(s["max"]), _fmt(s["absmax"]), str(s["nan"]), str(s["posinf"] + s["neginf"]), marker,
                      style=style)
    yield table
    if result.latent:
        names = ", ".join(f"{r.label} ({r.kind})" for r in result.latent[:5])
        yield Text(f"latent (did not reach an output): {names}", style="yellow")
