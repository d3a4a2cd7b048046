"""ur4rec's module graph has no import cycle (TYPE_CHECKING and function-level imports included), and ur4rec
reaches nanprobe only through its top-level API."""

from __future__ import annotations

import ast
from pathlib import Path

import ur4rec

UR4REC = Path(ur4rec.__file__).resolve().parent


def _module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under ``root`` (the folder of ``package``)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _imports(module: str, path: Path, modules: set[str]) -> set[str]:
    """Modules of ``modules`` that ``module`` imports anywhere in its file (any nesting level, any branch)."""
    is_package = path.name == "__init__.py"
    own_package = module if is_package else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name
                while name and name not in modules:  # `import pkg.mod.attr` style: the longest module prefix
                    name = name.rpartition(".")[0]
                if name:
                    targets.add(name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = own_package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in modules:
                    targets.add(sub)
                elif source in modules:
                    targets.add(source)
    targets.discard(module)
    return targets


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Edge A -> B when module A imports module B (both inside ``package``, whose folder is ``root``).
    ``from pkg import name`` points at ``pkg.name`` when that is a module, else at ``pkg``."""
    files = _module_names(root, package)
    modules = set(files)
    return {name: _imports(name, path, modules) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None. Depth-first search with an explicit path."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_ur4rec_has_no_import_cycle() -> None:
    graph = import_graph(UR4REC, "ur4rec")
    assert "ur4rec.trainer" in graph and "ur4rec.callbacks" in graph["ur4rec.trainer"]  # the walk sees imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_trainer_does_not_know_the_monitor() -> None:
    graph = import_graph(UR4REC, "ur4rec")
    assert "ur4rec.nanprobe_callback" not in graph["ur4rec.trainer"]
    assert "ur4rec.nanprobe_callback" in graph["ur4rec.train"]  # the CLI builds it and passes it in


def test_a_cycle_through_type_checking_and_a_function_is_found(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from __future__ import annotations\n\ndef f():\n    from .sub import b\n")
    (pkg / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import f\n")
    (pkg / "c.py").write_text("import pkg.a\nfrom pkg import sub\n")
    graph = import_graph(pkg, "pkg")
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.a"}
    assert graph["pkg.c"] == {"pkg.a", "pkg.sub"}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.a"]
    (pkg / "sub" / "b.py").write_text("import os\n")
    assert find_cycle(import_graph(pkg, "pkg")) is None


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
