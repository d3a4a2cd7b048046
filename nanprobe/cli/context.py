"""What every command gets: one rich Console for stdout (the report), one for stderr (progress, errors)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO

from rich.console import Console

__all__ = ["PIPE_WIDTH", "CLIContext", "output_width"]

PIPE_WIDTH = 100
"""The width of output that goes to a file or a pipe when nothing says otherwise (no ``COLUMNS``, no terminal)."""


def output_width(stream: IO[str] | None, environ: Mapping[str, str] | None = None) -> int | None:
    """The width to render at on ``stream`` (None: the real stdout). None for a terminal, whose width rich
    follows; otherwise ``COLUMNS`` when set, else the width of the terminal the user is watching the pipe from
    (stderr or stdin), else :data:`PIPE_WIDTH`."""
    environ = os.environ if environ is None else environ
    stream = sys.stdout if stream is None else stream
    try:
        if stream.isatty():
            return None
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        pass
    columns = environ.get("COLUMNS", "").strip()
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    for fd in (2, 0):
        try:
            width = os.get_terminal_size(fd).columns
        except (OSError, ValueError):
            continue
        if width > 0:
            return width
    return PIPE_WIDTH


@dataclass
class CLIContext:
    """The CLI's edges. Commands print reports to ``out`` and progress/messages to ``err``; nothing else prints."""

    out: Console
    err: Console
    debug: bool = False
    no_color: bool = False

    @classmethod
    def create(
        cls,
        *,
        no_color: bool = False,
        debug: bool = False,
        stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
        width: int | None = None,
    ) -> CLIContext:
        """Consoles on the real streams (or the given files). ``no_color`` also turns off highlighting and
        emoji so the text is the same on every terminal; rich honours ``NO_COLOR`` by itself. ``width``
        defaults to :func:`output_width` of each stream (a pipe or a file gets a fixed, sane width)."""
        style = {"no_color": no_color, "highlight": not no_color, "emoji": False}
        if no_color:
            style["color_system"] = None
        out_width = width if width is not None else output_width(stdout)
        err_width = width if width is not None else output_width(sys.stderr if stderr is None else stderr)
        out = Console(file=stdout, width=out_width, soft_wrap=False, **style)  # type: ignore[arg-type]
        err = Console(file=stderr, stderr=stderr is None, width=err_width, **style)  # type: ignore[arg-type]
        return cls(out=out, err=err, debug=debug, no_color=no_color)

    def error(self, message: str) -> None:
        """The one-line error of the CLI's error policy: ``nanprobe: error: ...`` on stderr, never wrapped."""
        self.err.print(f"nanprobe: error: {message}", markup=False, highlight=False, style="bold red",
                       soft_wrap=True)

    def note(self, message: str) -> None:
        """A dim informational line on stderr (never on stdout, which carries the report)."""
        self.err.print(message, markup=False, highlight=False, style="dim", soft_wrap=True)
