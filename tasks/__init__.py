"""Task registry: each task lives in its own module and is looked up by name."""

from __future__ import annotations

from importlib import import_module

# name -> (module, class name, one-line description). Modules import lazily (cold start).
TASKS: dict[str, tuple[str, str, str]] = {
    "burberry": (
        "tasks.burberry",
        "BurberryTask",
        "Product name, category and full price from a Burberry catalog image (DBQ/Burberry US).",
    ),
}


def get_task(name: str):
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}")
    module, cls, _ = TASKS[name]
    return getattr(import_module(module), cls)()
