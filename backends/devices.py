"""Devices and dtypes: which one a run uses, and what it cost in memory. torch loads only when needed."""

from __future__ import annotations

import os
from typing import Any

from harness.core.errors import HarnessError

GPU_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg")


def planned_device(device: str | None) -> str:
    """The device a run will use, known before the model loads (it is part of the run's identity).

    Without a GPU device node there is no CUDA: answered without importing torch, so that a
    finished re-run stays fast.
    """
    if device:
        return device
    if not any(os.path.exists(p) for p in GPU_NODES):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_device(device: str | None = None) -> str:
    import torch

    if device:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise HarnessError(f"--device {device}: no CUDA device is available")
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(device: str, dtype: Any = None):
    """bf16 on a GPU, fp32 on a CPU (bf16 matmuls on CPU are slow and change greedy outputs)."""
    import torch

    if dtype is None:
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise HarnessError(f"unknown dtype {dtype!r}; use e.g. float32, bfloat16 or float16")
        return getattr(torch, dtype)
    return dtype


def peak_memory_gb(device: str) -> float | None:
    """The most GPU memory allocated on ``device`` so far (None on a CPU: no allocator to ask)."""
    if not str(device).startswith("cuda"):
        return None
    import torch

    return round(torch.cuda.max_memory_allocated(device) / 1024**3, 3)
