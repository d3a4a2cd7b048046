"""The package's shape, checked from its source: no import cycles, nanprobe never imports its reference
workload, and one of each (one runner of batches, one JSON writer, one builder of report records)."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

from tests.architecture import find_cycles, import_graph, imported_names, modules

ROOT = Path(__file__).resolve().parents[1]
NANPROBE = modules(ROOT, "nanprobe")


def _trees() -> dict[str, ast.Module]:
    return {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in NANPROBE.items()}


def _called(tree: ast.Module, name: str) -> bool:
    return any(isinstance(n, ast.Call) and (getattr(n.func, "id", None) == name or getattr(n.func, "attr", None)
                                             == name) for n in ast.walk(tree))


def test_no_import_cycles_in_nanprobe_or_ur4rec() -> None:
    assert find_cycles(import_graph(ROOT, "nanprobe")) == []
    assert find_cycles(import_graph(ROOT, "ur4rec")) == []


def test_the_cycle_finder_finds_a_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text(textwrap.dedent("""
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from pkg.a import thing
    """))
    (pkg / "c.py").write_text("def f():\n    from . import a\n")
    (pkg / "sub").mkdir()
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "d.py").write_text("from ..a import x\nimport pkg.sub\n")
    assert find_cycles(import_graph(tmp_path, "pkg")) == [["pkg.a", "pkg.b", "pkg.a"]]
    graph = import_graph(tmp_path, "pkg")
    assert "pkg.a" in graph["pkg.c"] and graph["pkg.sub.d"] == {"pkg.a", "pkg.sub"}
    (pkg / "b.py").write_text("import os\n")
    assert find_cycles(import_graph(tmp_path, "pkg")) == []


def test_nanprobe_never_imports_ur4rec() -> None:
    offenders = {name for name, path in NANPROBE.items()
                 if any(t == "ur4rec" or t.startswith("ur4rec.") for t in imported_names(name, path))}
    assert offenders == set()


def test_one_runner_runs_the_model() -> None:
    """Only nanprobe.execution calls the model on a batch (the calling convention lives in batches.py)."""
    callers = {name for name, tree in _trees().items() if _called(tree, "call_model")}
    assert callers == {"nanprobe.execution"}


def test_one_json_writer() -> None:
    """Only nanprobe.report.jsonio calls ``json.dump``/``json.dumps`` (everyone else writes through it)."""
    writers = {name for name, tree in _trees().items()
               if any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in ("dump", "dumps")
                      and isinstance(n.func.value, ast.Name) and n.func.value.id == "json" for n in ast.walk(tree))}
    assert writers == {"nanprobe.report.jsonio"}


def test_report_records_are_built_only_as_report_types() -> None:
    """No dict literal shaped like a report record (a verdict, a first_nonfinite) outside nanprobe.report."""
    shaped = ({"cause", "fix"}, {"module", "module_type", "phase", "kind", "samples", "op"})
    offenders = []
    for name, tree in _trees().items():
        if name.startswith("nanprobe.report"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
                if any(shape <= keys for shape in shaped):
                    offenders.append(f"{name}:{node.lineno}")
    assert offenders == []


def test_no_import_fallbacks_for_nanprobes_own_modules() -> None:
    offenders = []
    for name, tree in _trees().items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Try):
                continue
            catches_import = any(isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                                 for h in node.handlers)
            own = any((isinstance(n, ast.ImportFrom) and (n.module or "").startswith("nanprobe")) or
                      (isinstance(n, ast.Import) and any(a.name.startswith("nanprobe") for a in n.names))
                      for stmt in node.body for n in ast.walk(stmt))
            if catches_import and own:
                offenders.append(f"{name}:{node.lineno}")
    assert offenders == []


def test_every_package_says_what_lives_there_and_who_may_import_it() -> None:
    packages = [p for p in (ROOT / "nanprobe").iterdir() if (p / "__init__.py").is_file()]
    missing = [p.name for p in packages
               if "May import" not in (ast.get_docstring(ast.parse((p / "__init__.py").read_text())) or "")]
    assert missing == []


def test_pandas_is_imported_only_where_a_dataframe_is_asked_for() -> None:
    """Importing pandas takes 0.2 s; ``nanprobe.monitor`` and the pytest plugin are imported by runs that never
    ask for a DataFrame, so no module imports it at load time (``to_frame`` methods import it when called)."""
    eager = []
    for name, tree in _trees().items():
        for node in tree.body:  # module level; `if TYPE_CHECKING:` blocks are If nodes, not imports
            imported = ([a.name for a in node.names] if isinstance(node, ast.Import)
                        else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            eager += [name for module in imported if module.split(".")[0] == "pandas"]
    assert eager == []
