"""The repository stands alone: a user's clone has nothing beside it, so nothing in it may read a
path outside the checkout (`../shared`, an absolute workplace path, `parents[N]` above the root)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("tests", "benchmarks", "scripts", "harness", "backends", "tasks", "reports", ".ci")
TOP_FILES = ("conftest.py", "tox.ini", "pyproject.toml", "README.md", "BENCHMARKS.md")
SUFFIXES = {".py", ".sh", ".md", ".toml", ".ini", ".yaml", ".yml", ".json", ".cfg", ""}
# What points outside: the sibling folder CI happens to have, or an absolute path of a machine.
OUTSIDE = re.compile(
    r"\.\./+shared|(?<![\w.])shared/(?:reference|DESIGN|README|hooks)|(?<![\w/.])/(?:work|root|home|opt|mnt)/\w"
)
PARENTS = re.compile(r"__file__\)?(?:\.resolve\(\))?\.parents\[(\d+)\]")
SELF = Path(__file__).resolve()


def project_files() -> list[Path]:
    found = [REPO / name for name in TOP_FILES if (REPO / name).is_file()]
    for folder in FOLDERS:
        found += [
            p
            for p in sorted((REPO / folder).rglob("*"))
            if p.is_file() and p.suffix in SUFFIXES and "__pycache__" not in p.parts and p.resolve() != SELF
        ]
    return found


def outside_references(path: Path) -> list[str]:
    """Lines of ``path`` naming a place outside the repository."""
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return []
    depth = len(path.relative_to(REPO).parts) - 1  # folders between the root and the file
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        above = any(int(n) > depth for n in PARENTS.findall(line))  # parents[depth] is the root itself
        if OUTSIDE.search(line) or above:
            out.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:120]}")
    return out


def test_no_project_file_reads_outside_the_repository():
    files = project_files()
    assert len(files) > 100  # the scan sees the project, not an empty glob
    assert [hit for f in files for hit in outside_references(f)] == []


@pytest.mark.parametrize(
    ("where", "line"),
    [
        ("tests/test_x.py", 'HUB = Path(__file__).resolve().parents[2] / "x"'),
        ("tests/test_x.py", 'HUB = Path("../shared/reference/phi3v-hub-files")'),
        ("scripts/x.sh", "cp /work/shared/reference/config.json ."),
        ("harness/core/x.py", "ROOT = Path(__file__).parents[3]"),
        ("README.md", "see shared/reference/phi3v.md"),
        ("tests/test_z.py", '"""The house rules of shared/DESIGN.md."""'),
    ],
)
def test_the_scan_catches_a_path_outside(tmp_path, monkeypatch, where, line):
    """A scan that cannot fail proves nothing: each of these lines points outside the checkout."""
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    bad = tmp_path / where
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text(line + "\n")
    assert outside_references(bad)


def test_the_scan_allows_paths_inside(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    good = tmp_path / "tests" / "test_y.py"
    good.parent.mkdir()
    good.write_text('REPO = Path(__file__).resolve().parents[1]\nx = "shared filesystem"\n')
    assert outside_references(good) == []
