"""The README's code blocks, and how each one is run.

Every fenced block is a :class:`Block` with an id made from the heading above it (``quick-start-python``, a
``-2`` suffix for the second block under the same heading). Its language says what it is:

- ``python``: run in a fresh interpreter, after the names of its setup (:mod:`tests.docs.fixtures`);
- ``sh``, ``bash``, ``shell``, ``console`` or no language: shell commands, run one by one in a folder holding
  the files of its setup; a command's exit status is 0 unless the line ends with a comment ``# exit N``;
- anything else (``text``, ``json``, ``yaml``, ...): output or a format, shown, never run.

So a new code block is run by default. An HTML comment right before a block changes that:
``<!-- docs: skip (why it cannot run here) -->`` (the reason is required) or ``<!-- docs: setup=NAME -->``.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["README", "Block", "Command", "commands", "parse", "slug"]

README = Path(__file__).resolve().parents[2] / "README.md"

PYTHON = ("python", "py", "python3")
SHELL = ("", "sh", "bash", "shell", "console")
_FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_MARKER = re.compile(r"^\s*<!--\s*docs:\s*(.*?)\s*-->\s*$")
_EXIT = re.compile(r"#\s*exit\s+(?:status\s+)?(\d+)\b")


def slug(heading: str) -> str:
    """``### Command line`` -> ``command-line`` (GitHub's anchors, more or less)."""
    text = re.sub(r"[`*_\[\]()]", "", heading.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "top"


@dataclass
class Block:
    id: str
    lang: str
    code: str
    line: int  # 1-based line of the opening fence
    heading: str
    skip: str | None = None  # the reason, when marked skip
    setup: str | None = None
    marker: str = ""

    @property
    def kind(self) -> str:
        """``python``, ``shell`` or ``text`` (shown, never run)."""
        if self.lang in PYTHON:
            return "python"
        if self.lang in SHELL:
            return "shell"
        return "text"

    @property
    def runs(self) -> bool:
        return self.kind != "text" and self.skip is None


@dataclass
class Command:
    """One command of a shell block and the exit status the README gives it."""

    line: str
    exit: int = 0
    block: str = ""
    argv: list[str] = field(default_factory=list)


def _marker(text: str) -> tuple[str | None, str | None]:
    """``skip (reason)`` -> (reason, None); ``setup=NAME`` -> (None, NAME)."""
    skip = re.fullmatch(r"skip\s*\((.+)\)", text)
    if skip:
        return skip.group(1).strip(), None
    setup = re.fullmatch(r"setup\s*=\s*([\w-]+)", text)
    if setup:
        return None, setup.group(1)
    raise ValueError(f"unknown docs marker {text!r}: use 'skip (reason)' or 'setup=NAME'")


def parse(path: Path = README) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    heading = "top"
    counts: dict[str, int] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        head = _HEADING.match(line)
        fence = _FENCE.match(line)
        if head and not fence:
            heading = slug(head.group(2))
        if not fence:
            i += 1
            continue
        indent, ticks, lang = fence.groups()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(ticks):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1  # the closing fence
        previous = start - 1
        while previous >= 0 and not lines[previous].strip():
            previous -= 1
        marker = _MARKER.match(lines[previous]) if previous >= 0 else None
        skip, setup = _marker(marker.group(1)) if marker else (None, None)
        counts[heading] = counts.get(heading, 0) + 1
        block_id = heading if counts[heading] == 1 else f"{heading}-{counts[heading]}"
        blocks.append(Block(id=block_id, lang=lang.lower(), code="\n".join(body) + "\n", line=start + 1,
                            heading=heading, skip=skip, setup=setup, marker=marker.group(1) if marker else ""))
    return blocks


def commands(block: Block) -> list[Command]:
    """The commands of a shell block: one per line (a trailing backslash continues it), comments and blank
    lines left out, each with the exit status its ``# exit N`` comment gives (0 without one)."""
    out: list[Command] = []
    pending = ""
    for raw in block.code.splitlines():
        text = pending + raw.strip()
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        pending = ""
        if not text or text.startswith("#"):
            continue
        status = _EXIT.search(text)
        argv = shlex.split(text, comments=True)
        out.append(Command(line=text, exit=int(status.group(1)) if status else 0, block=block.id, argv=argv))
    return out
