"""The house rules (README "Layout"), held by reading every module's imports (lazy ones included).

No cycles between modules, inside a floor too: if two modules need each other, the shared part moves
down. Floors: harness/core (the ground) imports nothing else of the project; the rooms (tasks/,
backends/, reports/) import only the ground from harness/; reports/ reads run directories only
(no torch, no backends, no tasks); tasks/ are text, images and numbers (no torch or transformers);
backends/ know no task. The spine (the rest of harness/) may import every room.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROJECT = ("harness", "tasks", "backends", "reports")


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth of the file (function-level imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level:  # relative: inside its own package
            found.add(".".join(path.relative_to(REPO).parts[: -node.level]))
    return found


def module_of(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_only(tree: ast.AST) -> set[int]:
    """Ids of the import nodes under ``if TYPE_CHECKING:``: annotations, never run."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    return skipped


def runtime_edges(path: Path, modules: set[str]) -> set[str]:
    """The project modules ``path`` imports when it runs (at import time or lazily, in a function)."""
    tree = ast.parse(path.read_text())
    skipped, here = _type_only(tree), module_of(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    names = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pkg import mod` imports the module; `from mod import name` the module holding it.
            names += [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    found = set()
    for name in names:
        parts = name.split(".")
        target = next(
            (".".join(parts[:k]) for k in range(len(parts), 0, -1) if ".".join(parts[:k]) in modules), None
        )
        if target and target != here:
            found.add(target)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(out)


def import_graph() -> dict[str, set[str]]:
    paths = [p for folder in PROJECT for p in files(folder)]
    modules = {module_of(p) for p in paths}
    return {module_of(p): runtime_edges(p, modules) for p in paths}


def files(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def offenders(folder: str, forbidden) -> list[str]:
    return [f"{p.relative_to(REPO)}: {m}" for p in files(folder) for m in sorted(imports(p)) if forbidden(m)]


def top(module: str) -> str:
    return module.split(".")[0]


def spine(module: str) -> bool:
    """harness/ above the ground: CLI, API, runner, models, training..."""
    return top(module) == "harness" and not module.startswith("harness.core") and module != "harness"


@pytest.mark.parametrize("room", ["tasks", "backends", "reports"])
def test_rooms_import_only_the_ground_from_harness(room):
    assert offenders(room, spine) == []


def test_the_ground_imports_nothing_else_of_the_project():
    assert offenders("harness/core", lambda m: top(m) in PROJECT and not m.startswith("harness.core")) == []


def test_reports_read_run_directories_only():
    assert offenders("reports", lambda m: top(m) in ("torch", "transformers", "backends", "tasks")) == []


def test_tasks_are_text_images_and_numbers():
    assert offenders("tasks", lambda m: top(m) in ("torch", "transformers", "backends")) == []


def test_backends_know_no_task():
    assert offenders("backends", lambda m: top(m) == "tasks") == []


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph()
    assert len(graph) > 50 and sum(map(len, graph.values())) > 100  # the reader sees the project
    assert cycles(graph) == []


def test_the_cycle_finder_would_catch_a_cycle(tmp_path, monkeypatch):
    """Lazy (function-level) and relative imports close a cycle; a TYPE_CHECKING import does not."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import f\n")
    (package / "b.py").write_text("def f():\n    from . import c\n")
    (package / "c.py").write_text("def g():\n    from .a import f\n")
    (package / "d.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import f\n"
    )
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    modules = {module_of(p) for p in package.glob("*.py")}
    graph = {module_of(p): runtime_edges(p, modules) for p in package.glob("*.py")}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
    assert graph["pkg.d"] == set()


def test_the_rules_would_catch_a_violation(tmp_path):
    """The reader sees lazy and relative imports: a test of the rules that cannot fail proves nothing."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import torch\n    from harness.runner import run_eval\n")
    assert {"torch", "harness.runner", "harness.runner.run_eval"} <= imports(bad)
    assert spine("harness.runner") and not spine("harness.core.schema")
