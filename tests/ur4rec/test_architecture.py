"""ur4rec's module graph has no import cycle (TYPE_CHECKING and function-level imports included), and ur4rec
reaches nanprobe only through its top-level API."""

from __future__ import annotations

import ast
from pathlib import Path

import ur4rec
from tests.architecture import find_cycles, import_graph

UR4REC = Path(ur4rec.__file__).resolve().parent
ROOT = UR4REC.parent


def test_ur4rec_has_no_import_cycle() -> None:
    graph = import_graph(ROOT, "ur4rec")
    assert "ur4rec.trainer" in graph and "ur4rec.callbacks" in graph["ur4rec.trainer"]  # the walk sees imports
    assert find_cycles(graph) == []


def test_the_trainer_does_not_know_the_monitor() -> None:
    graph = import_graph(ROOT, "ur4rec")
    assert "ur4rec.nanprobe_callback" not in graph["ur4rec.trainer"]
    assert "ur4rec.nanprobe_callback" in graph["ur4rec.train"]  # the CLI builds it and passes it in


def test_ur4rec_uses_only_nanprobes_top_level_api() -> None:
    """nanprobe's internals are being reorganised: ur4rec imports ``nanprobe`` itself, nothing below it, except
    the one adapter for the terminal rendering of a diagnosis (ur4rec.demo.steps.render_diagnosis)."""
    offenders = []
    for path in UR4REC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            for name in names:
                if name.startswith("nanprobe."):
                    offenders.append(f"{path.relative_to(UR4REC).as_posix()} imports {name}")
    assert offenders == ["demo/steps.py imports nanprobe.render"], offenders
