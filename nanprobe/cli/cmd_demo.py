"""``nanprobe demo``: a pointer. The demo lives with the reference workload (``python -m ur4rec.demo``)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nanprobe.cli.context import CLIContext

HELP = """\
The end-to-end demo of the original failure lives with the reference workload: run `python -m ur4rec.demo`
from the repository checkout (make demo). This command only says so."""

EPILOG = """\
exit status:
  2  always: the demo moved (one line on stderr says where)

examples:
  python -m ur4rec.demo --quick         # from the repository checkout
  make demo"""

MOVED = "the demo moved: run `python -m ur4rec.demo` from the repository checkout (make demo)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's old options are still accepted, so an old command line gets the pointer, not a usage error."""
    parser.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-progress", action="store_true", help=argparse.SUPPRESS)


def run(args: argparse.Namespace, ctx: CLIContext) -> int:
    ctx.error(MOVED)
    return 2
