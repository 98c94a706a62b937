"""Test setup for the suite and the doctests (harness/api.py, README.md): everything offline, every
cache in a per-session temporary directory."""

from __future__ import annotations

import os

import pytest

# Set before any test module imports transformers / datasets / wandb.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models are latency-bound: one thread is faster than two on a 2-core machine shared with
# pytest itself, and far steadier.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Before torch allocates: large freed CPU buffers stay mapped instead of being unmapped and faulted
# in again on every training step, as `harness` itself does (harness/core/allocator.py).
# HARNESS_MALLOC=0, or the user's own MALLOC_* / GLIBC_TUNABLES, leave malloc alone.
from harness.core.allocator import tune_malloc  # noqa: E402

tune_malloc()


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models are latency-bound: two OpenMP threads competing with pytest on 2 cores run 10-50x slower."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def harness_cache(tmp_path_factory):
    """One cache per test session: tiny models and the synthetic catalog are built once, never in ~/.cache."""
    path = tmp_path_factory.mktemp("harness-cache")
    old = os.environ.get("HARNESS_CACHE")
    os.environ["HARNESS_CACHE"] = str(path)
    os.environ["WANDB_DIR"] = str(path / "wandb-dir")
    os.environ["WANDB_CACHE_DIR"] = str(path / "wandb-cache")
    os.environ["WANDB_CONFIG_DIR"] = str(path / "wandb-config")
    yield path
    if old is None:
        os.environ.pop("HARNESS_CACHE", None)
    else:
        os.environ["HARNESS_CACHE"] = old
