"""report.md: the bundle's report as Markdown (for issues, chat, code review)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nanprobe.report import display_name
from nanprobe.report.history import outlier_lines, table_keys

__all__ = ["render_markdown", "summary_line"]


def _cell(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def summary_line(report: Mapping[str, Any]) -> str:
    """One sentence: what went non-finite where, at which step and rank."""
    first = report.get("first_nonfinite") or {}
    verdict = report.get("verdict") or {}
    where = f"step {report.get('step')}"
    if (report.get("world_size") or 1) > 1:
        where += f", rank {report.get('rank')} (ranks that saw it: {report.get('ranks_nonfinite')})"
    text = f"Non-finite `{first.get('kind')}` at {where}"
    if first.get("module") is not None:
        text += (f", first produced by `{display_name(first['module'])}` ({first.get('module_type')}, "
                 f"{first.get('phase')})")
    if verdict.get("cause"):
        text += f"; cause: **{verdict['cause']}**"
    return text + "."


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def render_markdown(report: Mapping[str, Any], layers: Sequence[Mapping[str, Any]]) -> str:
    monitor = report.get("monitor") or {}
    lines = [f"# nanprobe post-mortem: {report.get('run')} step {report.get('step')}", "", summary_line(report), ""]
    verdict = report.get("verdict")
    if verdict:
        lines += ["## Verdict", "", f"**{verdict.get('cause')}**: {verdict.get('summary', '')}", ""]
        lines += [f"- {e}" for e in verdict.get("evidence") or []]
        if verdict.get("fix"):
            lines += ["", f"**Fix:** {verdict['fix']}"]
        lines.append("")
    elif not monitor.get("reproduced", True):
        lines += ["## Verdict", "", "The diagnosis did not reproduce the non-finite value from the saved batch and "
                  f"RNG ({monitor.get('diagnosis_error') or 'clean re-run'}); the origin above is what the monitor "
                  "saw.", ""]
    first = report.get("first_nonfinite") or {}
    lines += ["## First non-finite value", ""]
    shown = {**first, "module": display_name(first["module"])} if first.get("module") is not None else first
    lines += _table(["field", "value"], [(k, shown.get(k)) for k in ("module", "module_type", "phase", "kind",
                                                                     "samples", "op", "source")])
    lines.append("")
    detected = monitor.get("detected") or {}
    lines += ["## Step", ""]
    lines += _table(["field", "value"], [
        ("run", report.get("run")), ("step", report.get("step")), ("epoch", report.get("epoch")),
        ("rank", f"{report.get('rank')} of {report.get('world_size')}"),
        ("ranks that saw it", report.get("ranks_nonfinite")), ("detected in", monitor.get("phase")),
        ("detected at", ", ".join(detected.get("paths") or [])), ("mode", (monitor.get("call") or {}).get("mode")),
        ("parameters/buffers already non-finite", ", ".join(report.get("nonfinite_parameters") or []) or "none"),
    ])
    lines.append("")
    if report.get("replay"):
        lines += ["## Replays", ""]
        lines += _table(["variant", "non-finite", "samples"],
                        [(r.get("variant"), r.get("nonfinite"), r.get("samples")) for r in report["replay"]])
        lines.append("")
    if layers:
        lines += ["## Layers", ""]
        lines += _table(["#", "module", "type", "phase", "absmax", "nan", "inf", "role"],
                        [(r.get("index"), display_name(r.get("module")), r.get("module_type"), r.get("phase"),
                          r.get("absmax"), r.get("nan"), r.get("inf"), r.get("role")) for r in layers[:60]])
        if len(layers) > 60:
            lines.append(f"\n({len(layers) - 60} more rows in stats.csv)")
        lines.append("")
    earlier = report.get("earlier_warnings") or []
    if earlier:
        lines += ["## Early warnings before the failure", ""]
        lines += [f"- step {w.get('step')} ({w.get('signal')}): {w.get('message')}" for w in earlier]
        lines.append("")
    history = report.get("history") or []
    if history:
        lines += ["## History (last steps)", ""]
        keys = table_keys(history)
        lines += _table(["step", *keys], [(r.get("step"), *(r.get(k) for k in keys)) for r in history[-15:]])
        lines += ["", *[f"- {line}" for line in outlier_lines(history)]] if outlier_lines(history) else []
        lines.append("")
    lines += ["## Reproduce", "", "```", "nanprobe replay <this bundle directory>", "```", ""]
    return "\n".join(lines)
