"""Rich rendering of nanprobe's results for people: a diagnosis report (a ``Diagnosis`` or its contract dict)
and a checkpoint scan. Independent of the CLI: ``nanprobe trace`` and ``nanprobe report`` share it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

__all__ = ["LAYER_WINDOW", "render_diagnosis", "render_scan"]

LAYER_WINDOW = 4  # layers shown before and after the origin


def _as_dict(report: Any) -> Mapping[str, Any]:
    if isinstance(report, Mapping):
        return report
    to_dict = getattr(report, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    raise TypeError(f"expected a Diagnosis or its dict, got {type(report).__name__}")


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.4g}"
    return str(value)


def _samples(samples: Sequence[int] | None, limit: int = 12) -> str:
    if not samples:
        return "-"
    shown = ", ".join(str(s) for s in list(samples)[:limit])
    return f"[{shown}{', ...' if len(samples) > limit else ''}]"


def _heading(text: str) -> Text:
    return Text(text, style="bold underline")


# ------------------------------------------------------------------------------------------------ sections

def _verdict(report: Mapping[str, Any]) -> RenderableType:
    status = report.get("status")
    verdict = report.get("verdict") or {}
    if status != "nonfinite":
        passes = report.get("forward_passes")
        more = f" ({passes} forward pass{'es' if passes != 1 else ''})" if passes is not None else ""
        body = Text.assemble(("CLEAN", "bold green"), f"  no non-finite value reached an output{more}")
        return Panel(body, title="nanprobe", title_align="left", border_style="green")
    cause = verdict.get("cause") or "unknown"
    body = Text.assemble(("NON-FINITE", "bold red"), "  cause: ", (cause, "bold"))
    if verdict.get("summary"):
        body.append("\n" + str(verdict["summary"]))
    evidence = verdict.get("evidence") or []
    for line in evidence:
        body.append("\n  • ", style="dim")
        body.append(str(line))
    return Panel(body, title="nanprobe verdict", title_align="left", border_style="red")


def _origin(report: Mapping[str, Any]) -> RenderableType | None:
    first = report.get("first_nonfinite")
    if not first:
        return None
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("module", Text(str(first.get("module", "?")), style="bold red"))
    rows = [("type", "module_type"), ("phase", "phase"), ("kind", "kind"), ("batch", "batch_index"),
            ("op", "op"), ("source", "source")]
    for label, key in rows:
        if first.get(key) is not None:
            grid.add_row(label, _num(first[key]))
    grid.add_row("samples", _samples(first.get("samples")))
    return Group(_heading("Where it starts"), grid)


def _root(report: Mapping[str, Any]) -> RenderableType | None:
    """``verdict.root``: where to fix it, when that is upstream of where the value first went non-finite."""
    root = (report.get("verdict") or {}).get("root")
    if not root:
        return None
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label in ("module", "parameter", "step"):
        if root.get(label) is not None:
            grid.add_row(label, Text(str(root[label]), style="bold" if label != "step" else ""))
    if root.get("evidence"):
        grid.add_row("why", Text(str(root["evidence"])))
    return Group(_heading("Where to fix it (root)"), grid)


def _layers(report: Mapping[str, Any]) -> RenderableType | None:
    layers = list(report.get("layers") or [])
    if not layers:
        return None
    origin_at = next((i for i, row in enumerate(layers) if row.get("role") == "origin"), None)
    lo, hi = 0, len(layers)
    if origin_at is not None:
        lo, hi = max(0, origin_at - LAYER_WINDOW), min(len(layers), origin_at + LAYER_WINDOW + 1)
    table = Table(title=None, show_edge=False, header_style="bold", pad_edge=False)
    for name, justify in [("#", "right"), ("module", "left"), ("type", "left"), ("phase", "left"),
                          ("min", "right"), ("max", "right"), ("absmax", "right"), ("nan", "right"),
                          ("inf", "right"), ("role", "left")]:
        table.add_column(name, justify=justify, no_wrap=name != "module",  # type: ignore[arg-type]
                         overflow="fold" if name == "module" else "ellipsis")
    styles = {"origin": "bold red", "propagated": "red", "latent": "yellow"}
    for row in layers[lo:hi]:
        role = row.get("role")
        table.add_row(_num(row.get("index")), str(row.get("module") or "<model>"), str(row.get("module_type", "")),
                      str(row.get("phase", "")), _num(row.get("min")), _num(row.get("max")),
                      _num(row.get("absmax")), _num(row.get("nan")), _num(row.get("inf")),
                      "<- origin" if role == "origin" else (role or ""), style=styles.get(role or ""))
    table.columns[-1].min_width = 10
    parts: list[RenderableType] = [_heading("Layers around it"), table]
    hidden = len(layers) - (hi - lo)
    if hidden:
        parts.append(Text(f"({hidden} more layer(s) not shown; see the JSON report)", style="dim"))
    return Group(*parts)


def _changes(changes: Mapping[str, Any] | None) -> str:
    if not changes:
        return "-"
    return ", ".join(f"{k}={_num(v)}" for k, v in changes.items())


def _replay(report: Mapping[str, Any]) -> RenderableType | None:
    replay = list(report.get("replay") or [])
    if not replay:
        return None
    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    table.add_column("variant")
    table.add_column("changes")
    table.add_column("non-finite?")
    table.add_column("samples")
    for row in replay:
        bad = bool(row.get("nonfinite"))
        table.add_row(str(row.get("variant", "")), _changes(row.get("changes")),
                      Text("yes", style="red") if bad else Text("no", style="green"), _samples(row.get("samples")))
    return Group(_heading("Replays (what was varied)"), table)


def _sample_details(report: Mapping[str, Any]) -> RenderableType | None:
    """One row per failing sample: its notes, then any other facts the engine recorded (key=value)."""
    rows: list[tuple[str, str]] = []
    for row in report.get("sample_details") or []:
        facts = [str(n) for n in row.get("notes") or []]
        facts += [f"{k}={_num(v)}" for k, v in row.items() if k not in ("sample", "notes")]
        rows.append((_num(row.get("sample")), "; ".join(facts)))
    if not any(facts for _, facts in rows):
        return None  # the samples are already listed under "Where it starts"
    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    table.add_column("sample", justify="right")
    table.add_column("notes")
    for sample, facts in rows:
        table.add_row(sample, facts or "-")
    return Group(_heading("Failing samples"), table)


def _audit(report: Mapping[str, Any]) -> RenderableType | None:
    """Values that never reached the model first (each a real bug), then one line for the rest."""
    findings = list(report.get("config_audit") or [])
    if not findings:
        return None
    missed = [f for f in findings if f.get("reached") is False]
    reached = [str(f.get("key", "")) for f in findings if f.get("reached") is True]
    unchecked = sum(1 for f in findings if f.get("reached") is None)
    parts: list[RenderableType] = [_heading("Config audit")]
    if missed:
        table = Table(show_edge=False, header_style="bold", pad_edge=False)
        for name in ("key", "config", "model", "message"):
            table.add_column(name)
        for row in missed:
            table.add_row(Text(str(row.get("key", "")), style="bold red"), _num(row.get("config_value")),
                          _num(row.get("model_value")), str(row.get("message", "")))
        parts.append(table)
    summary = f"{len(missed)} value(s) did not reach the model; {len(reached)} did"
    if reached:
        summary += f" ({', '.join(reached[:8])}{', ...' if len(reached) > 8 else ''})"
    if unchecked:
        summary += f"; {unchecked} key(s) not checked (no matching module attribute)"
    parts.append(Text(summary, style="dim" if not missed else ""))
    return Group(*parts)


def _extras(report: Mapping[str, Any]) -> RenderableType | None:
    lines: list[Text] = []
    params = report.get("nonfinite_parameters") or []
    if params:
        lines.append(Text.assemble(("non-finite parameters: ", "bold"), ", ".join(params)))
    latent = report.get("latent") or []
    if latent:
        shown = ", ".join(f"{row.get('module')} ({row.get('kind')}"
                          f"{', ' + str(row['op']) if row.get('op') else ''})" for row in latent[:6])
        more = f", ... (+{len(latent) - 6})" if len(latent) > 6 else ""
        lines.append(Text.assemble(("latent (did not reach an output): ", "bold"), shown + more))
    grad = report.get("backward_nonfinite")
    if isinstance(grad, Mapping) and grad:
        where = grad.get("module") or grad.get("parameter") or ", ".join(map(str, grad.get("parameters") or []))
        lines.append(Text.assemble(("first non-finite gradient: ", "bold"),
                                   f"{where or '?'} ({grad.get('kind', '?')})"))
    inst = report.get("instrumentation") or {}
    if inst.get("hooks_changed_result"):
        lines.append(Text(f"note: per-module hooks changed the result; localized with {inst.get('method')}",
                          style="yellow"))
    if report.get("repro"):
        lines.append(Text.assemble(("standalone repro: ", "bold"), str(report["repro"])))
    return Group(*lines) if lines else None


def _fix(report: Mapping[str, Any]) -> RenderableType | None:
    verdict = report.get("verdict") or {}
    if not verdict.get("fix"):
        return None
    return Panel(Text(str(verdict["fix"])), title="fix", title_align="left", border_style="cyan")


def render_diagnosis(report: Mapping[str, Any] | Any) -> RenderableType:
    """The terminal report: verdict first, then where it starts and the layers around it, the replays, the
    failing samples, the config audit, the fix. Accepts a ``Diagnosis`` or its ``to_dict()``."""
    data = _as_dict(report)
    sections = [_verdict(data), _origin(data), _root(data), _layers(data), _replay(data), _sample_details(data),
                _audit(data), _extras(data), _fix(data)]
    parts: list[RenderableType] = []
    for section in sections:
        if section is None:
            continue
        if parts:
            parts.append(Text(""))
        parts.append(section)
    return Group(*parts)


# ----------------------------------------------------------------------------------------------------- scan

def render_scan(result: Any, *, top: int | None = None, title: str | None = None) -> RenderableType:
    """A ``ScanResult`` (or its ``to_dict()``) as a ranked table, most likely culprit first."""
    data = _as_dict(result)
    findings = list(data.get("findings") or [])
    shown = findings if top is None else findings[:top]
    groups = data.get("groups") or {}
    scanned = ", ".join(f"{n} {k}" for k, n in groups.items()) or "nothing"
    bad = sum(1 for f in findings if f.get("nonfinite"))
    if bad:
        head = Text.assemble(("NON-FINITE", "bold red"), f"  {bad} tensor(s) hold NaN/Inf; "
                             f"{len(findings) - bad} more look suspicious")
    elif findings:
        head = Text.assemble(("SUSPICIOUS", "bold yellow"), f"  no NaN/Inf, but {len(findings)} tensor(s) look "
                             "extreme")
    else:
        head = Text.assemble(("CLEAN", "bold green"), "  no non-finite or extreme tensor")
    head.append(f"\nscanned {data.get('tensors_scanned', 0)} tensor(s): {scanned}", style="dim")
    parts: list[RenderableType] = [Panel(head, title=title or "nanprobe scan", title_align="left",
                                         border_style="red" if bad else ("yellow" if findings else "green"))]
    if shown:
        table = Table(show_edge=False, header_style="bold", pad_edge=False)
        for name, justify in [("#", "right"), ("score", "right"), ("where", "left"), ("tensor / why", "left"),
                              ("nan", "right"), ("inf", "right"), ("min", "right"), ("max", "right")]:
            table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
        for rank, f in enumerate(shown, 1):
            cell = Text(str(f.get("name", "")), style="bold red" if f.get("nonfinite") else "bold")
            cell.append("\n" + str(f.get("reason", "")), style="dim")
            table.add_row(str(rank), f"{float(f.get('score', 0)):.2f}", str(f.get("location", "")), cell,
                          _num(f.get("nan")), _num(f.get("inf")), _num(f.get("min")), _num(f.get("max")))
        parts += [Text(""), table]
        if len(shown) < len(findings):
            parts.append(Text(f"({len(findings) - len(shown)} more finding(s) not shown; --top or --json)",
                              style="dim"))
    return Group(*parts)
