"""Helpers shared by the tests (the offline setup is the repository's conftest.py)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"


def make_task(name: str = "burberry", *, synthetic_size: int = 600, prompt: str = "default", **data):
    """A task by name with its data settings changed (e.g. revision=...): what a user's copy of a
    config would say."""
    from tasks import get_task

    task = get_task(name, prompt=prompt)
    task.synthetic_size = synthetic_size
    if data:
        task.config.data = task.config.data.model_copy(update=data)
    return task


@functools.cache
def phi3v_hub_files() -> Path:
    """The published Phi-3-Vision repository files, laid out as the hub serves them (config, tokenizer,
    preprocessor config, weight map): the package's own copies plus the tests' (fixtures/phi3v-hub)."""
    from backends.phi3v.processing import ASSETS

    hub = Path(tempfile.mkdtemp(prefix="phi3v-hub-"))
    atexit.register(shutil.rmtree, hub, True)
    shutil.copy(ASSETS / "official-config.json", hub / "config.json")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(ASSETS / name, hub / name)
    for name in ("model.safetensors.index.json", "preprocessor_config.json"):
        shutil.copy(FIXTURES / "phi3v-hub" / name, hub / name)
    return hub


def requests(conversations: list[list[dict]], images: list[list], max_new_tokens: int) -> list:
    """One GenerationRequest per conversation (with its images), all with the same budget."""
    from backends.base import GenerationRequest

    return [GenerationRequest(m, im, max_new_tokens) for m, im in zip(conversations, images, strict=True)]


def assert_disjoint(splits: dict) -> None:
    """No sample id and no product group in two splits (the one leak check, pairwise)."""
    from harness.core.leakage import check_disjoint

    names = list(splits)
    for i, seen in enumerate(names):
        for judged in names[i + 1 :]:
            check_disjoint(splits[seen], splits[judged], f"{judged} are in {seen}")
