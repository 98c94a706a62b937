"""Helpers shared by the tests (the offline setup is the repository's conftest.py)."""

from __future__ import annotations


def make_task(name: str = "burberry", *, synthetic_size: int = 600, prompt: str = "default", **data):
    """A task by name with its data settings changed (e.g. revision=...): what a user's copy of a
    config would say."""
    from tasks import get_task

    task = get_task(name, prompt=prompt)
    task.synthetic_size = synthetic_size
    if data:
        task.config.data = task.config.data.model_copy(update=data)
    return task
