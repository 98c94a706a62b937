"""Data-parallel processes from the engines the field runs: torchrun / ``accelerate launch``.

Nothing is scheduled here: the launcher starts the processes and sets RANK, WORLD_SIZE and
LOCAL_RANK; this module reads them, joins the process group (gloo on CPU, nccl on GPUs), shards
the work deterministically and gathers what rank 0 needs. ``--processes N`` on the CLI is
``python -m torch.distributed.run --standalone --nproc_per_node N -m harness.cli ...``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """This process's place, as torchrun and accelerate launch set it (one process when unset)."""
    env = os.environ
    return World(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def join(device_kind: str) -> None:
    """Join the process group once (a no-op for one process)."""
    if world().size == 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_kind.startswith("cuda") else "gloo")


def barrier() -> None:
    if world().size == 1:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (a barrier too)."""
    if world().size == 1:
        return [obj]
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (e.g. a name made from the clock)."""
    if world().size == 1:
        return obj
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard(items: Sequence[T], rank: int, size: int, cost: Callable[[T], float]) -> list[T]:
    """This rank's share: items dealt costliest first to the least-loaded rank (ties by rank), so
    shards are disjoint, cover everything, balance the expected cost and are the same on every rank."""
    loads = [0.0] * size
    owner = {}
    for index in sorted(range(len(items)), key=lambda i: (-cost(items[i]), i)):
        target = min(range(size), key=lambda r: (loads[r], r))
        owner[index] = target
        loads[target] += cost(items[index])
    return [item for index, item in enumerate(items) if owner[index] == rank]


def launch(processes: int, argv: list[str]) -> int:
    """Run ``harness <argv>`` in ``processes`` processes on this node through torchrun; its exit code."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    return subprocess.call([*command, "-m", "harness.cli", *argv])
