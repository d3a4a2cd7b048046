"""report.html: one self-contained page (inline CSS, plots as base64 PNGs drawn with matplotlib's Agg)."""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from nanprobe.postmortem.markdown import summary_line
from nanprobe.report import display_name

__all__ = ["history_figure", "history_plot_png", "layer_plot_png", "render_html"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
th{background:#f4f4f4}.origin{background:#fde2e2}.latent{background:#fff4d6}.propagated{background:#fbeaea}
.summary{font-size:1.05em;background:#f7f7fb;border-left:4px solid #c0392b;padding:.6em 1em}
code,pre{background:#f4f4f4;padding:.1em .3em}img{max-width:100%;border:1px solid #eee}
"""


def _esc(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number


def _figure() -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=90)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def layer_plot_png(layers: Sequence[Mapping[str, Any]], root: str | None = None) -> bytes | None:
    """log10 |max| per layer in call order; the origin in red, the root (the layer where the values exploded)
    in purple, non-finite layers marked at the top."""
    forward = [r for r in layers if (r.get("phase") or "forward") == "forward"] or list(layers)
    if not forward:
        return None
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    xs, ys, bad, origin = [], [], [], []
    for i, row in enumerate(forward):
        absmax = _float(row.get("absmax"))
        y = math.log10(absmax) if absmax and absmax > 0 and math.isfinite(absmax) else None
        xs.append(i)
        ys.append(y if y is not None else float("nan"))
        if int(_float(row.get("nan")) or 0) or int(_float(row.get("inf")) or 0):
            bad.append(i)
        if row.get("role") == "origin":
            origin.append(i)
    ax.plot(xs, ys, marker="o", markersize=3, color="#2c7fb8", label="log10 |max| (finite values)")
    finite_ys = [y for y in ys if math.isfinite(y)]
    top = (max(finite_ys) if finite_ys else 0.0) + 1.0
    if bad:
        ax.scatter(bad, [top] * len(bad), marker="x", color="#e67e22", label="has NaN/Inf", zorder=3)
    for i, row in enumerate(forward):
        if root and row.get("module") == root:
            ax.axvline(i, color="#8e44ad", linewidth=2, linestyle="--", alpha=0.7)
            ax.scatter([i], [ys[i] if math.isfinite(ys[i]) else top], s=120, color="#8e44ad", marker="D",
                       label=f"root: {display_name(root)}", zorder=4)
            break
    for i in origin:
        ax.axvline(i, color="#c0392b", linewidth=2, alpha=0.6)
        ax.scatter([i], [top], s=120, color="#c0392b", label=f"origin: {display_name(forward[i].get('module'))}",
                   zorder=4)
    ax.set_xlabel("layer (call order)")
    ax.set_ylabel("log10 |max|")
    ax.set_title("Per-layer activation range")
    if len(forward) <= 40:
        ax.set_xticks(xs)
        ax.set_xticklabels([display_name(r.get("module"))[-22:] for r in forward], rotation=70, fontsize=7)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _png(fig)


HISTORY_SERIES = (("loss", "loss", "#2c7fb8"), ("grad_norm", "gradient norm", "#27ae60"),
                  ("output_absmax", "output |max|", "#8e44ad"), ("update_ratio", "update / weight", "#d35400"),
                  ("weight_norm", "weights' norm", "#16a085"), ("clip_ratio", "clip ratio", "#c0392b"),
                  ("loss_scale", "loss scale", "#7f8c8d"), ("lr", "learning rate", "#34495e"))


def history_plot_png(history: Sequence[Mapping[str, Any]], step: Any = None, *, onset: Any = None,
                     warned: Any = None) -> bytes | None:
    """:func:`history_figure` as PNG bytes (None with nothing recorded)."""
    fig = history_figure(history, step, onset=onset, warned=warned)
    return None if fig is None else _png(fig)


def history_figure(history: Sequence[Mapping[str, Any]], step: Any = None, *, onset: Any = None,
                   warned: Any = None) -> Any:
    """The run's recorded signals by step, one panel each (log scale where all values are positive): the
    failing step as a red dashed line, the divergence onset in purple, the early warning in orange; non-finite
    values as red crosses at the bottom of their panel."""
    series = [(key, label, color, [(r["step"], _float(r.get(key))) for r in history if key in r])
              for key, label, color in HISTORY_SERIES]
    series = [entry for entry in series if entry[3]]
    if not series:
        return None
    columns = min(3, len(series))
    rows = math.ceil(len(series) / columns)
    fig = _figure()
    fig.set_size_inches(10, 3.2 * rows)
    marks = [(step, "#c0392b", "--", "failing step"), (onset, "#8e44ad", "-", "divergence onset"),
             (warned, "#e67e22", ":", "early warning")]
    for n, (_key, label, color, points) in enumerate(series, start=1):
        ax = fig.add_subplot(rows, columns, n)
        xs = [s for s, _ in points]
        ys = [v if v is not None and math.isfinite(v) else float("nan") for _, v in points]
        finite = [y for y in ys if math.isfinite(y)]
        ax.plot(xs, ys, color=color, linewidth=1.2)
        log = bool(finite) and all(y > 0 for y in finite)
        if log:
            ax.set_yscale("log")
        bad = [s for s, v in points if v is None or not math.isfinite(v)]
        if bad:
            floor = min(finite) if finite else (1.0 if log else 0.0)
            ax.scatter(bad, [floor] * len(bad), marker="x", color="#c0392b", label="non-finite", zorder=3)
        for at, mark_color, style, name in marks:
            value = _float(at)
            if value is not None:
                ax.axvline(value, color=mark_color, linestyle=style, alpha=0.7, label=name)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if n == 1:
            ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def _img(png: bytes | None, alt: str) -> str:
    if png is None:
        return f"<p><em>No data for: {html.escape(alt)}.</em></p>"
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _plot(fn: Any, *args: Any, alt: str, **kwargs: Any) -> str:
    try:
        return _img(fn(*args, **kwargs), alt)
    except ImportError:
        return "<p><em>matplotlib is not installed: no plots (pip install matplotlib).</em></p>"


def _kv(rows: Sequence[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _layers_table(layers: Sequence[Mapping[str, Any]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("#", "module", "type", "phase", "min", "max", "absmax", "nan", "inf",
                                               "role"))
    rows = []
    for r in layers[:200]:
        cls = f' class="{_esc(r.get("role"))}"' if r.get("role") else ""
        row = {**r, "module": display_name(r.get("module"))}
        cells = "".join(f"<td>{_esc(row.get(k))}</td>" for k in ("index", "module", "module_type", "phase", "min",
                                                                "max", "absmax", "nan", "inf", "role"))
        rows.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def render_html(report: Mapping[str, Any], layers: Sequence[Mapping[str, Any]], env: Mapping[str, Any]) -> str:
    monitor = report.get("monitor") or {}
    first = report.get("first_nonfinite") or {}
    verdict = report.get("verdict") or {}
    title = f"nanprobe post-mortem: {report.get('run')} step {report.get('step')}"
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_esc(title)}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{_esc(title)}</h1>",
             f"<p class='summary'>{_esc(summary_line(report).replace('`', '').replace('**', ''))}</p>"]
    if verdict:
        parts.append(f"<h2>Verdict: {_esc(verdict.get('cause'))}</h2><p>{_esc(verdict.get('summary'))}</p>")
        parts.append("<ul>" + "".join(f"<li>{_esc(e)}</li>" for e in verdict.get("evidence") or []) + "</ul>")
        if verdict.get("fix"):
            parts.append(f"<p><strong>Fix:</strong> {_esc(verdict['fix'])}</p>")
    elif not monitor.get("reproduced", True):
        parts.append("<h2>Verdict</h2><p>The re-run from the saved batch and RNG did not reproduce the value "
                     f"({_esc(monitor.get('diagnosis_error') or 'clean re-run')}).</p>")
    parts.append("<h2>First non-finite value</h2>")
    shown = {**first, "module": display_name(first["module"])} if first.get("module") is not None else first
    parts.append(_kv([(k, shown.get(k)) for k in ("module", "module_type", "phase", "kind", "samples", "op",
                                                  "source")]))
    parts.append("<h2>Per-layer activation range</h2>")
    root = verdict.get("root") or {}
    if root:
        where = {**root, "module": display_name(root["module"])} if root.get("module") is not None else root
        parts.insert(-1, "<h2>Where to fix it (root)</h2>" + _kv([(k, where.get(k)) for k in ("module", "parameter",
                                                                                             "step", "evidence")
                                                                     if where.get(k) is not None]))
    parts.append(_plot(layer_plot_png, layers, root.get("module"), alt="per-layer activation range"))
    warning = report.get("warning") or next(iter(report.get("earlier_warnings") or []), None) or {}
    onset = root.get("step") if verdict.get("cause") == "training_divergence" else warning.get("onset")
    parts.append("<h2>Training history</h2>")
    parts.append(_plot(history_plot_png, report.get("history") or [], report.get("step"), onset=onset,
                       warned=warning.get("step"), alt="training history"))
    parts.append("<h2>Step</h2>")
    parts.append(_kv([("run", report.get("run")), ("step", report.get("step")), ("epoch", report.get("epoch")),
                      ("rank", f"{report.get('rank')} of {report.get('world_size')}"),
                      ("ranks that saw it", report.get("ranks_nonfinite")), ("detected in", monitor.get("phase")),
                      ("mode", (monitor.get("call") or {}).get("mode")),
                      ("non-finite parameters/buffers",
                       ", ".join(report.get("nonfinite_parameters") or []) or "none")]))
    if report.get("replay"):
        parts.append("<h2>Replays</h2>")
        parts.append(_kv([(r.get("variant"), f"non-finite={r.get('nonfinite')} samples={r.get('samples')}")
                          for r in report["replay"]]))
    if layers:
        parts.append("<h2>Layers</h2>")
        parts.append(_layers_table(layers))
    flags = dict(env.get("flags") or {})
    parts.append("<h2>Environment</h2>")
    parts.append(_kv([("torch", env.get("torch")), ("python", env.get("python")), ("nanprobe", env.get("nanprobe")),
                      ("device", (env.get("device") or {}).get("model_device")), *sorted(flags.items())]))
    parts.append("<h2>Reproduce</h2><pre>nanprobe replay &lt;this bundle directory&gt;</pre></body></html>")
    return "\n".join(parts)


def precision_plot_png(report: Any) -> bytes | None:
    """log10 |max| of every module's outputs as bars, the target dtype's max as a line; overflowing layers
    in red."""
    layers = [layer for layer in report.layers if layer.absmax]
    if not layers:
        return None
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    xs = list(range(len(layers)))
    ys = [math.log10(layer.absmax) for layer in layers]
    colors = ["#c0392b" if layer.predicted else "#2c7fb8" for layer in layers]
    ax.bar(xs, ys, color=colors)
    ax.axhline(math.log10(layers[0].limit), color="#c0392b", linestyle="--",
               label=f"{report.dtype} max {layers[0].limit:.3g}")
    ax.set_ylabel("log10 |max| of the outputs")
    ax.set_title(f"Precision headroom: {report.source_dtype} -> {report.dtype}")
    if len(layers) <= 60:
        ax.set_xticks(xs)
        ax.set_xticklabels([(layer.module or "<root>")[-24:] for layer in layers], rotation=70, fontsize=7)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)


def render_precision_html(report: Any) -> str:
    """A self-contained page: the verdict, the bar plot and the per-layer table of a precision report."""
    from nanprobe.precision import describe

    title = f"nanprobe precision: {report.source_dtype} -> {report.dtype}"
    rows = "".join(
        f"<tr class='{'origin' if layer.predicted else ''}'><td>{_esc(layer.module or '<root>')}</td>"
        f"<td>{_esc(layer.module_type)}</td><td>{_esc(layer.absmax)}</td><td>{_esc(layer.headroom)}</td>"
        f"<td>{layer.flush_share:.1%}</td><td>{_esc(layer.confirmed)}</td></tr>" for layer in report.layers)
    return "\n".join([
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_esc(title)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{_esc(title)}</h1>",
        f"<p class='summary'>{_esc(describe(report))}</p>",
        _plot(precision_plot_png, report, alt="precision headroom per layer"),
        "<h2>Layers</h2><table><tr><th>module</th><th>type</th><th>|max|</th><th>headroom</th><th>flush to 0</th>"
        f"<th>confirmed</th></tr>{rows}</table></body></html>"])
