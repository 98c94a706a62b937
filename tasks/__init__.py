"""Where tasks come from: built-in configs, a directory of configs, a file, or the DBQ family.

- built-ins: ``tasks/configs/*.toml`` in the package (``burberry``);
- a directory: every ``*.toml`` in ``$HARNESS_TASKS`` (``os.pathsep``-separated) or else ``./tasks/``;
  a config there overrides a built-in of the same name;
- a file: ``--task path/to/task.toml``;
- ``--task dbq:<Brand>.<Country>``: a DBQ catalog, derived from the burberry config.
"""

from __future__ import annotations

import os
from pathlib import Path

BUILTIN_DIR = Path(__file__).parent / "configs"
DEFAULT_TASK = "burberry"


def config_dirs() -> list[tuple[Path, str]]:
    """(directory, what to call it) in override order: built-ins first, user directories last."""
    dirs = [(BUILTIN_DIR, "built-in")]
    user = os.environ.get("HARNESS_TASKS")
    paths = [Path(p) for p in user.split(os.pathsep) if p] if user else [Path.cwd() / "tasks"]
    return dirs + [(p, str(p)) for p in paths if p.is_dir() and p.resolve() != BUILTIN_DIR.resolve()]


def task_files() -> dict[str, tuple[Path, str]]:
    """Task name -> (config file, source) of every named task; later directories override earlier ones."""
    import tomllib

    found: dict[str, tuple[Path, str]] = {}
    for directory, source in config_dirs():
        for path in sorted(directory.glob("*.toml")):
            try:
                name = tomllib.loads(path.read_text(encoding="utf-8")).get("name") or path.stem
            except (OSError, ValueError):
                name = path.stem  # broken: listed, and `harness task check` says why
            found[str(name)] = (path, source)
    return found


def get_task(name: str = DEFAULT_TASK, *, prompt: str = "default"):
    """The task called ``name`` (or defined by the file ``name``), asking with ``prompt``."""
    from tasks.catalog import CatalogTask
    from tasks.config import load_config

    if name.startswith("dbq:"):
        from tasks.dbq import dbq_config

        return CatalogTask(dbq_config(name), source="dbq (from the built-in burberry config)", prompt=prompt)
    if name.endswith(".toml") or Path(name).is_file():
        path = Path(name)
        return CatalogTask(load_config(path), source=str(path), base_dir=path.parent, prompt=prompt)
    files = task_files()
    if name not in files:
        from harness.core.errors import HarnessError

        raise HarnessError(
            f"unknown task {name!r}; valid tasks: {', '.join(sorted(files))}, dbq:<Brand>.<Country>, "
            "or a path to a task .toml"
        )
    path, source = files[name]
    return CatalogTask(load_config(path), source=source, base_dir=path.parent, prompt=prompt)


def list_tasks() -> list[tuple[str, str, str]]:
    """(name, source, description) of every named task: `harness tasks`."""
    from harness.core.errors import HarnessError
    from tasks.config import load_config

    rows = []
    for name, (path, source) in sorted(task_files().items()):
        try:
            description = load_config(path).description
        except HarnessError as err:
            description = f"(invalid: {str(err).splitlines()[0]})"
        rows.append((name, source, description))
    return rows
