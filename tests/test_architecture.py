"""The house rules of shared/DESIGN.md, held by reading every module's imports (lazy ones included).

Floors: harness/core (the ground) imports nothing else of the project; the rooms (tasks/,
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


def test_the_rules_would_catch_a_violation(tmp_path):
    """The reader sees lazy and relative imports: a test of the rules that cannot fail proves nothing."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import torch\n    from harness.runner import run_eval\n")
    assert {"torch", "harness.runner", "harness.runner.run_eval"} <= imports(bad)
    assert spine("harness.runner") and not spine("harness.core.schema")
