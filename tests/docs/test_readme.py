"""The README's examples run: every Python block in a fresh interpreter on a tiny model (here), every shell
block's commands in a folder of files made for them, piped at 80 columns, each with the exit status the README
gives it (``tests/test_first_hour.py``, which runs them in order as one session). A block that cannot run here
says why, in the README (``<!-- docs: skip (why) -->``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs import fixtures
from tests.docs.readme import Block, commands, parse
from tests.docs.shell import shell_env

BLOCKS = parse()

# Blocks that cannot carry a marker, each with why it is not run (none today: mark blocks in the README).
EXEMPT: dict[str, str] = {}


def runnable(kind: str) -> list[Block]:
    """The blocks of this kind that run (not marked skip, not exempt), in README order."""
    return [b for b in BLOCKS if b.kind == kind and b.runs and b.id not in EXEMPT]


def test_every_code_block_runs_or_says_why() -> None:
    code = [b for b in BLOCKS if b.kind != "text"]
    assert len(code) >= 4, [b.id for b in BLOCKS]
    for block in code:
        if block.skip is not None:
            assert len(block.skip) > 10, f"{block.id}: say why it cannot run ({block.skip!r})"
            continue
        if block.id in EXEMPT:
            continue
        known = fixtures.PYTHON_SETUPS if block.kind == "python" else fixtures.SHELL_SETUPS
        assert block.setup is None or block.setup in known, f"{block.id}: unknown setup {block.setup!r}"
    assert set(EXEMPT) <= {b.id for b in BLOCKS}, "an exemption names a block that is gone: drop it"
    ids = [b.id for b in BLOCKS]
    assert len(ids) == len(set(ids))


def test_readme_parser_reads_markers_and_exit_statuses(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# T\n## Use it\n<!-- docs: skip (needs a CUDA device) -->\n```python\nx = 1\n```\n\n"
                      "<!-- docs: setup=none -->\n\n```sh\nnanprobe trace a.pt \\\n  --json r.json  # exit 1: found\n"
                      "# a comment\nnanprobe scan a.pt\n```\n```text\nout\n```\n")
    first, second, third = parse(readme)
    assert (first.id, first.kind, first.skip, first.runs) == ("use-it", "python", "needs a CUDA device", False)
    assert (second.id, second.kind, second.setup, second.runs) == ("use-it-2", "shell", "none", True)
    assert [(c.argv[:2], c.exit) for c in commands(second)] == [(["nanprobe", "trace"], 1), (["nanprobe", "scan"], 0)]
    assert third.kind == "text" and not third.runs


def _python(block: Block, folder: Path) -> subprocess.CompletedProcess[str]:
    setup = block.setup or "tiny_model"
    prelude = f"from tests.docs.fixtures import names as _names\nglobals().update(_names({setup!r}))\n"
    env = shell_env(folder)
    if setup == "pytest":  # the block is a test module: run it with pytest (the plugin registers itself)
        path = folder / f"test_readme_{block.id.replace('-', '_')}.py"
        path.write_text(prelude + block.code)
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path.name]
    else:
        path = folder / "block.py"
        path.write_text(prelude + block.code)
        argv = [sys.executable, path.name]
    return subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize("block", runnable("python"), ids=lambda b: b.id)
def test_python_block(block: Block, tmp_path: Path) -> None:
    result = _python(block, tmp_path)
    detail = f"README.md line {block.line} ({block.id}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, detail
    assert "Traceback" not in result.stderr, detail


