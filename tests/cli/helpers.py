"""Running the CLI in-process and reading what it printed."""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanprobe.cli.main import main

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self, path: Path) -> Any:
        return json.loads(path.read_text())


def run_cli(*argv: Any) -> Result:
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in argv], stdout=out, stderr=err)
    return Result(code, out.getvalue(), err.getvalue())


def one_error_line(result: Result) -> str:
    """The stderr of a failed command: exactly one line, starting with the CLI's prefix."""
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert lines[0].startswith("nanprobe: error: "), lines[0]
    assert "Traceback" not in result.err
    return lines[0]
