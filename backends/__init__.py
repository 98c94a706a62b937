"""Backends: who answers (and learns). One module per backend, imported only when asked for (torch is
slow to import); which one runs a model is its family's choice (backends/families)."""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from harness.core.errors import HarnessError

# name -> module exposing ``load_generator(model_info, *, device, dtype) -> Generator``.
BACKENDS: dict[str, str] = {"hf": "backends.hf", "api": "backends.api"}


def get_backend(name: str) -> ModuleType:
    if name not in BACKENDS:
        raise HarnessError(f"unknown backend {name!r}; valid backends: {', '.join(sorted(BACKENDS))}")
    return import_module(BACKENDS[name])
