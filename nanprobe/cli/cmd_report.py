"""``nanprobe report BUNDLE``: show a post-mortem bundle written by the monitor."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from nanprobe.cli.context import CLIContext
from nanprobe.errors import InputError
from nanprobe.report.history import outlier_lines, table_keys

HELP = """\
Show a post-mortem bundle written by nanprobe's monitor.

Prints the diagnosis of the non-finite step (verdict, origin, layers, replays) with the step, epoch, rank and
the loss / grad-norm history before it. --html writes the self-contained HTML report (plots included) and
prints its path; --json prints the bundle's report.json."""

EPILOG = """\
exit status:
  0  the bundle was shown
  2  BUNDLE is missing, incomplete (its write was interrupted) or not a bundle

examples:
  nanprobe report nan-bundles/sasrec-step40123
  nanprobe report nan-bundles/sasrec-step40123 --html report.html --open
  nanprobe report nan-bundles/sasrec-step40123 --json | jq .first_nonfinite"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", metavar="BUNDLE", help="a bundle directory (<out_dir>/<run>-step<k>)")
    parser.add_argument("--html", metavar="PATH", nargs="?", const="",
                        help="write the HTML report to PATH (default: the bundle's own report.html) and print the path")
    parser.add_argument("--open", action="store_true", help="with --html: open it in a web browser")
    parser.add_argument("--json", action="store_true", help="print the bundle's report.json instead of the report")


def header(report: dict[str, Any], path: Path) -> RenderableType:
    monitor = report.get("monitor") or {}
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")  # a long bundle path folds; it is never cut
    rank = f"{report.get('rank')} of {report.get('world_size')}"
    rows = [("bundle", str(path)), ("run", report.get("run")), ("step", report.get("step")),
            ("epoch", report.get("epoch")), ("rank", rank), ("ranks that saw it", report.get("ranks_nonfinite")),
            ("detected in", f"{monitor.get('phase')} ({(monitor.get('call') or {}).get('mode')} mode)"),
            ("created", report.get("created"))]
    for key, value in rows:
        if value is not None:
            table.add_row(key, Text(str(value)))
    if not monitor.get("reproduced", True):
        note = monitor.get("diagnosis_error") or "the re-run from the saved batch and RNG was clean"
        table.add_row("note", Text(f"not reproduced by the diagnosis: {note}", style="yellow"))
    return table


def history_table(history: list[dict[str, Any]], last: int = 10) -> RenderableType | None:
    if not history:
        return None
    keys = table_keys(history)
    title = Text(f"history (last {min(last, len(history))} of {len(history)} steps kept)", style="bold")
    table = Table()
    table.add_column("step", justify="right")
    for key in keys:  # the names the user logged: plain text, never markup
        table.add_column(Text(key), justify="right", overflow="fold")
    for row in history[-last:]:
        table.add_row(Text(str(row.get("step"))), *(Text(_fmt(row.get(k))) for k in keys))
    return Group(title, table, *(Text(line) for line in outlier_lines(history)))


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def run(args: argparse.Namespace, ctx: CLIContext) -> int:
    from nanprobe.postmortem.bundle import load_bundle
    from nanprobe.render import render_diagnosis

    bundle = load_bundle(args.bundle)
    if args.json:  # the file as written, version included
        ctx.out.file.write((bundle.path / "report.json").read_text(encoding="utf-8"))
        return 0
    if args.html is not None:
        return _html(args, ctx, bundle.path)
    report = bundle.report.to_json_dict()
    parts: list[RenderableType] = [header(report, bundle.path), Text(""), render_diagnosis(report)]
    history = history_table(bundle.history)
    if history is not None:
        parts += [Text(""), history]
    parts += [Text(""), Text(f"reproduce: nanprobe replay {bundle.path}", style="dim")]
    ctx.out.print(Group(*parts))
    return 0


def _html(args: argparse.Namespace, ctx: CLIContext, path: Path) -> int:
    source = path / "report.html"
    target = Path(args.html) if args.html else source
    if target != source:
        if target.is_dir():
            target = target / f"{path.name}.html"
        if not target.parent.is_dir():
            raise InputError(f"--html {args.html!r}: directory {str(target.parent)!r} does not exist")
        try:
            shutil.copyfile(source, target)
        except OSError as e:
            raise InputError(f"cannot write --html {args.html!r}: {e.strerror or e}") from e
    ctx.out.print(str(target.resolve()), markup=False, highlight=False, soft_wrap=True)
    if args.open:
        import webbrowser

        webbrowser.open(target.resolve().as_uri())
    return 0
