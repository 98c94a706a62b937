"""Backend registry: one module per backend, imported only when asked for (torch is slow to import)."""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from harness.core.errors import HarnessError

# name -> module exposing ``load_generator(model_info, device=None, dtype=None)``.
BACKENDS: dict[str, str] = {"hf": "backends.hf", "api": "backends.api"}


def backend_for(family: str) -> str:
    """The backend that runs a model of this family: served models over HTTP, all others in-process."""
    return "api" if family == "api" else "hf"


def get_backend(name: str) -> ModuleType:
    if name not in BACKENDS:
        raise HarnessError(f"unknown backend {name!r}; valid backends: {', '.join(sorted(BACKENDS))}")
    return import_module(BACKENDS[name])
