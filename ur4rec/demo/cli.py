"""``python -m ur4rec.demo`` (``make demo``): the original failure, end to end, rendered on the terminal.

The steps are :func:`ur4rec.demo.run_demo`'s; this module owns the edges: the command line, one rich Console for
stdout (the report) and one for stderr (progress bars, notes, errors), the work folder, the JSON file and the
exit status.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import IO, Any

from rich.console import Console, RenderableType
from rich.text import Text

from nanprobe import InputError

from .original_setup import build_like_the_original
from .story import STEPS, run_demo

__all__ = ["EXIT_BAD_INPUT", "EXIT_FACT_FAILED", "MARKER", "main", "prepare_workdir"]

PROG = "python -m ur4rec.demo"
EXIT_FACT_FAILED = 1
EXIT_BAD_INPUT = 2
MARKER = ".nanprobe-demo"  # the same marker as before the demo moved here, so old work folders are reused

DESCRIPTION = """\
Replay the original failure end to end: ur4rec trains fine, evaluates to NaN, nanprobe says why, the fix works.

1. data: MovieLens-100k if it is on disk or can be extracted (RecBole's wheel via pip), else a synthetic twin
2. train UR4RecV2MoE briefly as the original team did (model built from hand-listed constructor arguments that
   forget sasrec_dropout, original attention masking, train batch 32)
3. evaluate at batch 64 under nanprobe's monitor: non-finite scores, a post-mortem bundle
4. nanprobe.diagnose on the checkpoint (what `nanprobe trace` runs): verdict, evidence, config audit (each
   expected fact is checked)
5. the fix (ur4rec's default masking, build_model(config)), retrain briefly, evaluate beside most-popular
6. a short report: what went wrong, what nanprobe showed, what changed"""

EPILOG = """\
exit status:
  0  the demo ran and every expected fact held
  1  an expected fact did not hold (named on stderr; the output shows which)
  2  bad input: --data movielens without the data, a --workdir that is not a demo folder

examples:
  python -m ur4rec.demo                  # about 3 minutes on 2 CPU cores; files in ./nanprobe-demo
  python -m ur4rec.demo --quick          # synthetic data, small model, well under a minute
  python -m ur4rec.demo --data movielens --workdir /tmp/demo --json demo.json"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="synthetic data (unless --data says otherwise), small model, short training")
    parser.add_argument("--data", choices=("auto", "movielens", "synthetic"), default="auto",
                        help="auto: MovieLens-100k when available or extractable, else synthetic (default; "
                             "--quick makes auto mean synthetic)")
    parser.add_argument("--workdir", metavar="DIR", default="nanprobe-demo",
                        help="where checkpoints, bundles and reports go (default: ./nanprobe-demo)")
    parser.add_argument("--json", metavar="FILE", help="write the demo's results and checked facts as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--no-color", action="store_true",
                        help="plain text output without colors or styles (NO_COLOR is honoured too)")
    return parser


def prepare_workdir(path: str | Path) -> Path:
    """Create it, or reuse one that an earlier demo made (its step folders are cleared); refuse anything else."""
    work = Path(path)
    if work.exists() and not work.is_dir():
        raise InputError(f"--workdir {str(work)!r} is a file")
    if work.is_dir() and any(work.iterdir()) and not (work / MARKER).is_file():
        raise InputError(f"--workdir {str(work)!r} is not empty and was not made by the demo; choose another")
    work.mkdir(parents=True, exist_ok=True)
    (work / MARKER).write_text("made by the ur4rec demo; its subfolders are replaced on the next run\n")
    for sub in ("original", "fixed", "trace"):
        shutil.rmtree(work / sub, ignore_errors=True)
    return work


class _Printer:
    """The demo's Reporter: step headings and results on stdout, spinners on stderr (a terminal only)."""

    def __init__(self, out: Console, err: Console, *, progress: bool = True) -> None:
        self.out, self.err, self.progress = out, err, progress

    def step(self, index: int, title: str) -> None:
        self.out.rule(Text(f"{index}/{len(STEPS)}  {title}", style="bold"), align="left")

    def show(self, renderable: RenderableType) -> None:
        self.out.print(renderable, markup=False)

    def busy(self, label: str) -> AbstractContextManager[Any]:
        if self.progress and self.err.is_terminal:
            return self.err.status(Text(label), spinner="dots")
        return nullcontext()


def _consoles(no_color: bool, stdout: IO[str] | None, stderr: IO[str] | None) -> tuple[Console, Console]:
    """stdout carries the report, stderr progress and messages; ``no_color`` also turns off highlighting and
    emoji so the text is the same on every terminal."""
    style: dict[str, Any] = {"no_color": no_color, "highlight": not no_color, "emoji": False}
    if no_color:
        style["color_system"] = None
    out = Console(file=stdout, soft_wrap=False, **style)
    err = Console(file=stderr, stderr=stderr is None, **style)
    return out, err


def _note(err: Console, message: str) -> None:
    err.print(message, markup=False, highlight=False, style="dim", soft_wrap=True)


def _error(err: Console, message: str) -> None:
    """One line on stderr, never wrapped, never read as rich markup (paths and messages may hold brackets)."""
    err.print(f"{PROG}: error: {' '.join(message.split())}", markup=False, highlight=False, style="bold red",
              soft_wrap=True)


def _run(args: argparse.Namespace, out: Console, err: Console) -> int:
    if args.json and Path(args.json).is_dir():
        raise InputError(f"--json {args.json!r} is a directory; give a file name")
    work = prepare_workdir(args.workdir)
    _note(err, f"{PROG}: working in {work.resolve()}")
    printer = _Printer(out, err, progress=not args.no_progress)
    report = run_demo(printer, data=args.data, quick=args.quick, workdir=work, build_original=build_like_the_original,
                      console=err, progress=not args.no_progress)
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
        except OSError as e:
            raise InputError(f"cannot write --json {args.json!r}: {e.strerror or e}") from e
        _note(err, f"{PROG}: wrote {args.json}")
    if not report.ok:
        bad = [f.name for f in report.facts if not f.ok] or ["the demo stopped early"]
        _error(err, "the demo's expected facts did not hold: " + "; ".join(bad))
        return EXIT_FACT_FAILED
    return 0


def main(argv: list[str] | None = None, *, stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> int:
    """Run the demo; returns the exit status. Bad input (nanprobe's or ur4rec's :class:`InputError`) is one line
    on stderr and exit 2; anything else is a bug and keeps its traceback."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    out, err = _consoles(args.no_color, stdout, stderr)
    try:
        return _run(args, out, err)
    except InputError as e:
        _error(err, str(e))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        _error(err, "interrupted")
        return 130
