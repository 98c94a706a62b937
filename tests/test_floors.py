"""constraints/lowest.txt (tox -e lowest) pins exactly the floors that pyproject.toml declares."""

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def declared_floors() -> dict[str, Version]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    floors = {}
    for req in reqs:
        if req.name in ("harness", "torch"):  # the self-reference; torch comes from cpu.txt
            continue
        lows = [Version(s.version) for s in req.specifier if s.operator == ">="]
        assert len(lows) == 1, req
        floors[req.name.lower()] = lows[0]
    return floors


def pinned() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints" / "lowest.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            specs = list(req.specifier)
            assert len(specs) == 1 and specs[0].operator == "==", line
            pins[req.name.lower()] = Version(specs[0].version)
    return pins


def test_lowest_constraints_pin_every_declared_floor():
    assert pinned() == declared_floors()
