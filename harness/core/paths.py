"""Where harness keeps what it builds or downloads."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$HARNESS_CACHE`` or ``~/.cache/harness``: tiny models, the synthetic catalog, downloaded images."""
    path = Path(os.environ.get("HARNESS_CACHE") or Path.home() / ".cache" / "harness")
    path.mkdir(parents=True, exist_ok=True)
    return path
