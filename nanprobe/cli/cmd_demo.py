"""``nanprobe demo``: the original failure, end to end, in a few minutes (ur4rec's steps, rendered here)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from rich.console import RenderableType
from rich.text import Text

from nanprobe.cli.context import CLIContext
from nanprobe.errors import InputError

HELP = """\
Replay the original failure end to end: ur4rec trains fine, evaluates to NaN, nanprobe says why, the fix works.

1. data: MovieLens-100k if it is on disk or can be extracted (RecBole's wheel via pip), else a synthetic twin
2. train UR4RecV2MoE briefly as the original team did (model built from hand-listed constructor arguments that
   forget sasrec_dropout, original attention masking, train batch 32)
3. evaluate at batch 64 under nanprobe's monitor: non-finite scores, a post-mortem bundle
4. nanprobe trace on the checkpoint: verdict, evidence, config audit (each expected fact is checked)
5. the fix (ur4rec's default masking, build_model(config)), retrain briefly, evaluate beside most-popular
6. a short report: what went wrong, what nanprobe showed, what changed"""

EPILOG = """\
exit status:
  0  the demo ran and every expected fact held
  1  an expected fact did not hold (named on stderr; the output shows which)
  2  bad input: --data movielens without the data, a --workdir that is not a demo folder, no repo checkout

examples:
  nanprobe demo                         # about 3 minutes on 2 CPU cores; files in ./nanprobe-demo
  nanprobe demo --quick                 # synthetic data, small model, well under a minute
  nanprobe demo --data movielens --workdir /tmp/demo --json demo.json"""

MARKER = ".nanprobe-demo"
SETUP = Path("examples") / "original_failure" / "original_setup.py"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="synthetic data (unless --data says otherwise), small model, short training")
    parser.add_argument("--data", choices=("auto", "movielens", "synthetic"), default="auto",
                        help="auto: MovieLens-100k when available or extractable, else synthetic (default; "
                             "--quick makes auto mean synthetic)")
    parser.add_argument("--workdir", metavar="DIR", default="nanprobe-demo",
                        help="where checkpoints, bundles and reports go (default: ./nanprobe-demo)")
    parser.add_argument("--json", metavar="FILE", help="write the demo's results and checked facts as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def load_original_setup() -> Any:
    """``build_like_the_original`` from the repository checkout (the only place the mistake lives)."""
    import nanprobe

    path = Path(nanprobe.__file__).resolve().parents[1] / SETUP
    if not path.is_file():
        raise InputError(f"nanprobe demo needs the repository checkout: {path} not found "
                         "(clone the repository and `pip install -e .` there)")
    spec = importlib.util.spec_from_file_location("nanprobe_demo_original_setup", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_like_the_original


def prepare_workdir(path: str | Path) -> Path:
    """Create it, or reuse one that an earlier demo made (its step folders are cleared); refuse anything else."""
    work = Path(path)
    if work.exists() and not work.is_dir():
        raise InputError(f"--workdir {str(work)!r} is a file")
    if work.is_dir() and any(work.iterdir()) and not (work / MARKER).is_file():
        raise InputError(f"--workdir {str(work)!r} is not empty and was not made by nanprobe demo; choose another")
    work.mkdir(parents=True, exist_ok=True)
    (work / MARKER).write_text("made by nanprobe demo; its subfolders are replaced on the next run\n")
    for sub in ("original", "fixed", "trace"):
        shutil.rmtree(work / sub, ignore_errors=True)
    return work


class _Printer:
    """The demo's Reporter: step headings and results on stdout."""

    def __init__(self, ctx: CLIContext, *, progress: bool = True) -> None:
        self.ctx, self.progress = ctx, progress

    def step(self, index: int, title: str) -> None:
        self.ctx.out.rule(Text(f"{index}/6  {title}", style="bold"), align="left")

    def show(self, renderable: RenderableType) -> None:
        self.ctx.out.print(renderable)

    def busy(self, label: str) -> AbstractContextManager[Any]:
        if self.progress and self.ctx.err.is_terminal:
            return self.ctx.err.status(label, spinner="dots")
        return nullcontext()


def run(args: argparse.Namespace, ctx: CLIContext) -> int:
    try:
        from ur4rec.demo import run_demo
    except ModuleNotFoundError as e:
        raise InputError(f"nanprobe demo needs ur4rec (in the repository checkout): {e}") from e
    build = load_original_setup()
    if args.json and Path(args.json).is_dir():
        raise InputError(f"--json {args.json!r} is a directory; give a file name")
    work = prepare_workdir(args.workdir)
    ctx.note(f"nanprobe demo: working in {work.resolve()}")
    printer = _Printer(ctx, progress=not args.no_progress)
    report = run_demo(printer, data=args.data, quick=args.quick, workdir=work, build_original=build,
                      console=ctx.err, progress=not args.no_progress)
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
        except OSError as e:
            raise InputError(f"cannot write --json {args.json!r}: {e.strerror or e}") from e
        ctx.note(f"nanprobe demo: wrote {args.json}")
    if not report.ok:
        bad = [f.name for f in report.facts if not f.ok] or ["the demo stopped early"]
        ctx.error("the demo's expected facts did not hold: " + "; ".join(bad))
        return 1
    return 0
