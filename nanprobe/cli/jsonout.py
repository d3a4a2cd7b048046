"""Writing the machine report (``--json``) for every command: strict JSON through
:func:`nanprobe.report.write_json`, with a failure to write turned into a one-line input error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nanprobe.errors import InputError
from nanprobe.report import write_json

__all__ = ["write_report"]


def write_report(path: str | Path, data: Any, *, flag: str = "--json") -> None:
    """``data`` (a report or any JSON-ready value) as strict JSON at ``path``."""
    to_json_dict = getattr(data, "to_json_dict", None)
    try:
        write_json(path, to_json_dict() if callable(to_json_dict) else data)
    except OSError as e:
        raise InputError(f"cannot write {flag} {str(path)!r}: {e.strerror or e}") from e
