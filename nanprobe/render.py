"""Rich rendering of nanprobe's results for people: a diagnosis report (a ``Diagnosis`` or its contract dict)
and a checkpoint scan. Independent of the CLI: ``nanprobe trace`` and ``nanprobe report`` share it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from nanprobe.fitted_table import Column, FittedTable
from nanprobe.report import display_name

__all__ = ["LAYER_WINDOW", "Column", "FittedTable", "TensorNote", "render_diagnosis", "render_scan", "tensor_notes"]

LAYER_WINDOW = 4  # layers shown before and after the origin

# Every piece of user or library text (module names, messages, evidence, config keys, paths) reaches rich as a
# ``Text``, never as a ``str``: rich would read ``[minilm]`` or ``[bold]`` in it as markup and drop it.


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


def _plain(value: Any, style: str = "") -> Text:
    """User or library text, shown as it is (no markup)."""
    return Text(str(value), style=style)


# ------------------------------------------------------------------------------------------------ sections

_BATCHNORM_STATS = ("running_mean", "running_var")


@dataclass(frozen=True)
class TensorNote:
    """What is known about one non-finite parameter or buffer that a report names (``nonfinite_parameters``
    holds names only): whether it is a parameter or a buffer, and what it holds ("NaN", "Inf", "NaN and Inf")."""

    role: Literal["parameter", "buffer"] | None = None
    values: str | None = None


def tensor_notes(model: Any, names: Sequence[str]) -> dict[str, TensorNote]:
    """A :class:`TensorNote` for each of ``names`` that ``model`` has as a parameter or a buffer."""
    import torch

    owned: dict[str, tuple[Literal["parameter", "buffer"], Any]] = {}
    owned.update((n, ("buffer", t)) for n, t in model.named_buffers())
    owned.update((n, ("parameter", t)) for n, t in model.named_parameters())
    notes: dict[str, TensorNote] = {}
    for name in names:
        if name not in owned:
            continue
        role, tensor = owned[name]
        values = None
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            with torch.no_grad():
                nan, inf = bool(torch.isnan(tensor).any()), bool(torch.isinf(tensor).any())
            values = " and ".join(w for w, bad in (("NaN", nan), ("Inf", inf)) if bad) or None
        notes[name] = TensorNote(role=role, values=values)
    return notes


def _note_for(name: str, notes: Mapping[str, TensorNote]) -> TensorNote:
    if name in notes:
        return notes[name]
    if name.rsplit(".", 1)[-1] in (*_BATCHNORM_STATS, "num_batches_tracked"):
        return TensorNote(role="buffer")  # BatchNorm's statistics are buffers in every model
    return TensorNote()


def _held(report: Mapping[str, Any], notes: Mapping[str, TensorNote], limit: int = 4) -> Text | None:
    """``1.running_var (a buffer) holds NaN; fc.weight (a parameter) holds Inf``: the model's own non-finite
    tensors, which belong in the headline whatever the status."""
    names = [str(n) for n in report.get("nonfinite_parameters") or []]
    if not names:
        return None
    parts = []
    for name in names[:limit]:
        note = _note_for(name, notes)
        role = f" (a {note.role})" if note.role else ""
        parts.append(f"{name}{role} holds {note.values or 'NaN/Inf'}")
    more = f"; and {len(names) - limit} more (nonfinite_parameters in --json)" if len(names) > limit else ""
    return Text("; ".join(parts) + more)


def _consequence(report: Mapping[str, Any], notes: Mapping[str, TensorNote]) -> str:
    """What a clean run with a non-finite parameter or buffer means for the next runs."""
    names = [str(n) for n in report.get("nonfinite_parameters") or []]
    values = {_note_for(n, notes).values or "non-finite" for n in names}
    word = values.pop() if len(values) == 1 else "non-finite"
    it = "it" if len(names) == 1 else "them"
    if all(n.rsplit(".", 1)[-1] in _BATCHNORM_STATS for n in names):
        # train-mode BatchNorm normalizes with the batch's statistics and only writes the running ones
        return f"eval-mode forwards through {it} will be {word}"
    return f"this run did not carry {it} to an output; a forward that reads {it} will be {word}"


def _verdict(report: Mapping[str, Any], notes: Mapping[str, TensorNote]) -> RenderableType:
    status = report.get("status")
    verdict = report.get("verdict") or {}
    held = _held(report, notes)
    if status != "nonfinite":
        passes = report.get("forward_passes")
        more = f" ({passes} forward pass{'es' if passes != 1 else ''})" if passes is not None else ""
        if held is None:
            body = Text.assemble(("CLEAN", "bold green"), f"  no non-finite value reached an output{more}")
            return Panel(body, title="nanprobe", title_align="left", border_style="green")
        body = Text.assemble(("CLEAN", "bold green"), " — but ", held, f": {_consequence(report, notes)}",
                             f"\nno non-finite value reached an output{more}")
        return Panel(body, title="nanprobe", title_align="left", border_style="yellow")
    cause = verdict.get("cause") or "unknown"
    body = Text.assemble(("NON-FINITE", "bold red"), "  cause: ", (str(cause), "bold"))
    if held is not None:
        held.stylize("red")
        body.append("\n")
        body.append_text(held)
    if verdict.get("summary"):
        body.append("\n" + str(verdict["summary"]))
    for line in verdict.get("evidence") or []:
        body.append("\n  • ", style="dim")
        body.append(str(line))
    return Panel(body, title="nanprobe verdict", title_align="left", border_style="red")


def _origin(report: Mapping[str, Any]) -> RenderableType | None:
    first = report.get("first_nonfinite")
    if not first:
        return None
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    grid.add_row("module", _plain(display_name(first.get("module")), style="bold red"))
    rows = [("type", "module_type"), ("phase", "phase"), ("kind", "kind"), ("batch", "batch_index"),
            ("op", "op"), ("source", "source")]
    for label, key in rows:
        if first.get(key) is not None:
            grid.add_row(label, _plain(_num(first[key])))
    grid.add_row("samples", _plain(_samples(first.get("samples"))))
    return Group(_heading("Where it starts"), grid)


def _root(report: Mapping[str, Any]) -> RenderableType | None:
    """``verdict.root``: where to fix it, when that is upstream of where the value first went non-finite."""
    root = (report.get("verdict") or {}).get("root")
    if not root:
        return None
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    if root.get("module") is not None:
        grid.add_row("module", _plain(display_name(root["module"]), style="bold"))
    for label in ("parameter", "step"):
        if root.get(label) is not None:
            grid.add_row(label, _plain(root[label], style="bold" if label != "step" else ""))
    if root.get("evidence"):
        grid.add_row("why", _plain(root["evidence"]))
    return Group(_heading("Where to fix it (root)"), grid)


# The layers table, most important column last: on a narrow console phase and min go first, then max, #, type,
# inf, nan, absmax; module (which folds) and role always stay.
_LAYER_COLUMNS = [Column("#", "right", drop=4), Column("module", flexible=True), Column("type", drop=5),
                  Column("phase", drop=0), Column("min", "right", drop=0), Column("max", "right", drop=3),
                  Column("absmax", "right", drop=8), Column("nan", "right", drop=7), Column("inf", "right", drop=6),
                  Column("role")]
_ROLE_STYLES = {"origin": "bold red", "propagated": "red", "latent": "yellow"}


def _layers(report: Mapping[str, Any]) -> RenderableType | None:
    layers = list(report.get("layers") or [])
    if not layers or report.get("status") != "nonfinite":  # a clean run has no "around it"
        return None
    origin_at = next((i for i, row in enumerate(layers) if row.get("role") == "origin"), None)
    lo, hi = 0, len(layers)
    if origin_at is not None:
        lo, hi = max(0, origin_at - LAYER_WINDOW), min(len(layers), origin_at + LAYER_WINDOW + 1)
    table = FittedTable(list(_LAYER_COLUMNS))
    for row in layers[lo:hi]:
        role = row.get("role")
        table.add_row(_num(row.get("index")), _plain(display_name(row.get("module"))),
                      _plain(row.get("module_type", "")), _plain(row.get("phase", "")), _num(row.get("min")),
                      _num(row.get("max")), _num(row.get("absmax")), _num(row.get("nan")), _num(row.get("inf")),
                      "<- origin" if role == "origin" else (role or ""), style=_ROLE_STYLES.get(role or "", ""))
    parts: list[RenderableType] = [_heading("Layers around it"), table]
    hidden = len(layers) - (hi - lo)
    if hidden:
        parts.append(Text(f"({hidden} more layer(s) not shown; see the JSON report)", style="dim"))
    return Group(*parts)


def _changes(changes: Mapping[str, Any] | None) -> str:
    if not changes:
        return "-"
    return ", ".join(f"{k}={_num(v)}" for k, v in changes.items())


def _text_table(*headers: str, justify: Sequence[str] = ()) -> Table:
    """A table of free text: every cell wraps, and a word longer than its column folds instead of being cut."""
    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    for i, header in enumerate(headers):
        table.add_column(header, justify=justify[i] if i < len(justify) else "left",  # type: ignore[arg-type]
                         overflow="fold")
    return table


def _replay(report: Mapping[str, Any]) -> RenderableType | None:
    replay = list(report.get("replay") or [])
    if not replay:
        return None
    table = _text_table("variant", "changes", "non-finite?", "samples")
    for row in replay:
        if row.get("error"):
            outcome = Text("raised", style="yellow")
        else:
            outcome = Text("yes", style="red") if row.get("nonfinite") else Text("no", style="green")
        table.add_row(_plain(row.get("variant", "")), _plain(_changes(row.get("changes"))), outcome,
                      _plain(_samples(row.get("samples"))))
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
    table = _text_table("sample", "notes", justify=("right",))
    for sample, facts in rows:
        table.add_row(_plain(sample), _plain(facts or "-"))
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
        table = _text_table("key", "config", "model", "message")
        for row in missed:
            table.add_row(_plain(row.get("key", ""), style="bold red"), _plain(_num(row.get("config_value"))),
                          _plain(_num(row.get("model_value"))), _plain(row.get("message", "")))
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
    latent = report.get("latent") or []
    if latent:
        shown = ", ".join(f"{display_name(row.get('module'))} ({row.get('kind')}"
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
    return Panel(_plain(verdict["fix"]), title="fix", title_align="left", border_style="cyan")


def render_diagnosis(report: Mapping[str, Any] | Any, *, tensors: Mapping[str, TensorNote] | None = None
                     ) -> RenderableType:
    """The terminal report: verdict first (with the model's own non-finite parameters and buffers, whatever
    the status), then where it starts and the layers around it, the replays, the failing samples, the config
    audit, the fix. Accepts a ``Diagnosis`` or its ``to_dict()``; ``tensors`` (see :func:`tensor_notes`) says
    which of the non-finite names are buffers and what they hold, when the model is at hand."""
    data = _as_dict(report)
    notes = tensors or {}
    sections = [_verdict(data, notes), _origin(data), _root(data), _layers(data), _replay(data),
                _sample_details(data), _audit(data), _extras(data), _fix(data)]
    parts: list[RenderableType] = []
    for section in sections:
        if section is None:
            continue
        if parts:
            parts.append(Text(""))
        parts.append(section)
    return Group(*parts)


# ----------------------------------------------------------------------------------------------------- scan

_SCAN_COLUMNS = [Column("#", "right", drop=5), Column("score", "right", drop=4), Column("where", drop=3),
                 Column("tensor / why", flexible=True), Column("nan", "right"), Column("inf", "right", drop=2),
                 Column("min", "right", drop=1), Column("max", "right", drop=0)]


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
    parts: list[RenderableType] = [Panel(head, title=_plain(title or "nanprobe scan"), title_align="left",
                                         border_style="red" if bad else ("yellow" if findings else "green"))]
    if shown:
        table = FittedTable(list(_SCAN_COLUMNS), flex_min=30)
        for rank, f in enumerate(shown, 1):
            cell = Text(str(f.get("name", "")), style="bold red" if f.get("nonfinite") else "bold")
            cell.append("\n" + str(f.get("reason", "")), style="dim")
            table.add_row(str(rank), f"{float(f.get('score', 0)):.2f}", _plain(f.get("location", "")), cell,
                          _num(f.get("nan")), _num(f.get("inf")), _num(f.get("min")), _num(f.get("max")))
        parts += [Text(""), table]
        if len(shown) < len(findings):
            parts.append(Text(f"({len(findings) - len(shown)} more finding(s) not shown; --top or --json)",
                              style="dim"))
    return Group(*parts)


# ------------------------------------------------------------------------------------------------ precision

_PRECISION_COLUMNS = (Column("module", flexible=True), Column("type", drop=1), Column("|max|", "right"),
                      Column("headroom", "right", drop=2), Column("flush", "right", drop=3),
                      Column("overflows", drop=None))


def render_precision(report: Any) -> RenderableType:
    """A :class:`~nanprobe.precision.PrecisionReport`: the verdict line, then every module's headroom."""
    from nanprobe.precision import describe

    bad = report.overflows
    head = Text.assemble(("OVERFLOWS" if bad else "FITS", "bold red" if bad else "bold green"), "  ",
                         _plain(describe(report)))
    if report.whole_model:
        head.append(f"\nthe whole model under autocast to {report.dtype}: {report.whole_model}", style="dim")
    table = FittedTable(list(_PRECISION_COLUMNS))
    for layer in report.layers:
        verdict = ("yes, confirmed" if layer.confirmed else "predicted; not confirmed" if layer.confirmed is False
                   else "predicted") if layer.predicted else (
            f"already non-finite in {report.source_dtype} ({layer.nonfinite_calls}/{layer.calls} calls)"
            if layer.nonfinite_calls else "")
        table.add_row(_plain(display_name(layer.module)), _plain(layer.module_type), _num(layer.absmax),
                      _num(layer.headroom), f"{layer.flush_share:.1%}" if layer.flush_share else "-",
                      _plain(verdict), style="bold red" if layer.predicted else "")
    return Group(Panel(head, title=f"nanprobe precision: {report.source_dtype} -> {report.dtype}",
                       title_align="left", border_style="red" if bad else "green"), Text(""), table)
