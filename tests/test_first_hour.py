"""A user's first hour, scripted: the README's shell commands, in README order, in one folder of their own,
output piped (not a terminal) at 80 columns. No traceback, no cut module name or number, and each command
exits with the status the README gives it (``# exit N``; 0 without one)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from nanprobe.render import LAYER_WINDOW
from nanprobe.report import display_name
from tests.docs import fixtures
from tests.docs.readme import Command, commands
from tests.docs.shell import run_command, shell_env
from tests.docs.test_readme import runnable

pytestmark = pytest.mark.slow  # about 20 s: one interpreter per command

WIDTH = 80


def _reports(command: Command, folder: Path) -> list[dict[str, Any]]:
    """The JSON reports behind what a command printed: its --json file, or the bundle it rendered."""
    argv = command.argv
    paths = []
    if "--json" in argv and argv.index("--json") + 1 < len(argv):
        paths.append(folder / argv[argv.index("--json") + 1])
    if len(argv) > 2 and argv[:2] in (["nanprobe", "report"], ["nanprobe", "replay"]):
        paths.append(folder / argv[2] / "report.json")
    return [json.loads(p.read_text()) for p in paths if p.is_file() and p.suffix == ".json"]


def _shown_modules(report: dict[str, Any]) -> set[str]:
    """The module names a terminal report shows: the origin, and the layers around it."""
    names = set()
    first = report.get("first_nonfinite") or {}
    if "module" in first:
        names.add(display_name(first["module"]))
    layers = report.get("layers") or []
    at = next((i for i, row in enumerate(layers) if row.get("role") == "origin"), None)
    if at is not None and report.get("status") == "nonfinite":
        names.update(display_name(row["module"]) for row in layers[max(0, at - LAYER_WINDOW): at + LAYER_WINDOW + 1])
    return names


def _check(command: Command, out: str, err: str, code: int, folder: Path) -> None:
    detail = f"$ {command.line}\n--- stdout\n{out[-4000:]}\n--- stderr\n{err[-2000:]}"
    assert code == command.exit, detail
    assert "Traceback" not in out + err, detail
    assert "…" not in out, detail  # rich's ellipsis: something was cut
    assert all(len(line) <= WIDTH for line in out.splitlines()), detail
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("nanprobe: error: "), detail
        assert out == "", detail
    if "--json" in command.argv and code in (0, 1):
        assert (folder / command.argv[command.argv.index("--json") + 1]).is_file(), detail
    for report in _reports(command, folder):
        for name in _shown_modules(report):
            assert re.search(rf"(?<![\w.<]){re.escape(name)}(?![\w.>])", out), (name, detail)


def test_first_hour_from_the_readme(tmp_path: Path) -> None:
    blocks = runnable("shell")
    session = [command for block in blocks for command in commands(block)]
    assert any(c.exit == 1 for c in session) and any(c.exit == 2 for c in session), \
        "the README's first hour shows a diagnosis (exit 1) and an input error (exit 2)"
    setups = {block.setup or "cli_files" for block in blocks}
    for setup in sorted(setups):
        fixtures.SHELL_SETUPS[setup](tmp_path)
    env = shell_env(tmp_path, columns=WIDTH)
    for command in session:
        result = run_command(command, tmp_path, env)
        _check(command, result.stdout, result.stderr, result.returncode, tmp_path)
