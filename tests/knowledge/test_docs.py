"""docs/causes.md is generated from the table and must not drift from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from nanprobe.knowledge import load_table
from nanprobe.knowledge.docs import render_markdown

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "causes.md"


def test_committed_page_equals_the_generated_one() -> None:
    assert DOC.read_text(encoding="utf-8") == render_markdown(), (
        "docs/causes.md is stale: regenerate it with `python -m nanprobe.knowledge.docs > docs/causes.md`")


def test_the_page_lists_every_entry_and_fills_placeholders() -> None:
    text = render_markdown()
    for entry in load_table():
        assert f"`{entry.name}`" in text
    assert "{where}" not in text and "{who}" not in text
    assert "## Losses" in text and "## Ops" in text and "## Handled by torch" in text


def test_module_prints_the_page() -> None:
    out = subprocess.run([sys.executable, "-m", "nanprobe.knowledge.docs"], capture_output=True, text=True,
                         check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert out.stdout == render_markdown()
