"""What every command gets: one rich Console for stdout (the report), one for stderr (progress, errors)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO

from rich.console import Console

__all__ = ["CLIContext"]


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
        emoji so the text is the same on every terminal; rich honours ``NO_COLOR`` by itself."""
        style = {"no_color": no_color, "highlight": not no_color, "emoji": False}
        if no_color:
            style["color_system"] = None
        out = Console(file=stdout, width=width, soft_wrap=False, **style)  # type: ignore[arg-type]
        err = Console(file=stderr, stderr=stderr is None, width=width, **style)  # type: ignore[arg-type]
        return cls(out=out, err=err, debug=debug, no_color=no_color)

    def error(self, message: str) -> None:
        """The one-line error of the CLI's error policy: ``nanprobe: error: ...`` on stderr, never wrapped."""
        self.err.print(f"nanprobe: error: {message}", markup=False, highlight=False, style="bold red",
                       soft_wrap=True)

    def note(self, message: str) -> None:
        """A dim informational line on stderr (never on stdout, which carries the report)."""
        self.err.print(message, markup=False, highlight=False, style="dim", soft_wrap=True)
