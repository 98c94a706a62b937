"""The evaluation loop: resolve, load data, resume, generate in batches, score, store, summarise.

Error policy, so that no number is printed as if nothing went wrong:

- Per sample, in the one generation loop (harness/generation.py): a bad sample is recorded with its
  error and counted; consecutive generation errors stop the run; out of memory halves the batch.
- A re-run retries errored samples (the retry's record supersedes the error's).
- More than ``max_error_rate`` of the samples errored: the run is written as "incomplete"
  (metrics.json says so), the CLI exits non-zero and reports refuse it unless told otherwise.
"""

from __future__ import annotations

import math
import os
import subprocess
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from rich.console import Console

import harness
from harness.core.errors import HarnessError
from harness.core.schema import GenerationInfo, ModelInfo, RunConfig
from harness.core.store import RunStore, latest
from harness.distributed import barrier, gather, join, shard, world
from harness.generation import MAX_CONSECUTIVE_ERRORS, generate_records
from harness.identity import pin
from harness.models import resolve
from harness.results import MAX_ERROR_RATE, print_metrics, rescore, summarise
from tasks.base import Task, TaskData

VERSIONED = ("torch", "transformers", "peft", "datasets", "accelerate", "tokenizers", "pillow")


def run_eval(
    task: str | Task,
    model: str | ModelInfo,
    data: str | None = None,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 8,
    output_dir: Path = Path("runs"),
    fresh: bool = False,
    max_new_tokens: int | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    device: str | None = None,
    dtype: str | None = None,
    max_error_rate: float = MAX_ERROR_RATE,
    max_consecutive_errors: int = MAX_CONSECUTIVE_ERRORS,
    prompt: str = "default",
    quiet: bool = False,
    concurrency: int | None = None,
    min_new_tokens: int | None = None,
    num_crops: int | None = None,
) -> Path:
    """Evaluate ``model`` on ``task``; returns the run directory. A finished run is not redone.

    ``data`` None is the task's own data; ``max_new_tokens`` None sizes the budget from the task's
    longest targets (see :func:`budget`); ``prompt`` picks the task's prompt variant; ``quiet``
    prints nothing (no tables, no progress); ``concurrency``: requests in flight to a served model.
    """
    started = time.perf_counter()
    if batch_size < 1:
        raise HarnessError(f"--batch-size must be >= 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise HarnessError(f"--limit must be >= 1, got {limit}")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise HarnessError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    if not 0 <= max_error_rate <= 1:
        raise HarnessError(f"--max-error-rate must be between 0 and 1, got {max_error_rate}")
    task_obj = _get_task(task, prompt) if isinstance(task, str) else task
    info = model if isinstance(model, ModelInfo) else resolve(model, revision, trust_remote_code)
    if num_crops:
        info = info.model_copy(update={"num_crops": num_crops})
    task_data = task_obj.load(data, split, limit=limit)
    if info.adapter:
        from harness.training import check_adapter_never_saw

        check_adapter_never_saw(Path(info.adapter), task_obj.name, task_data)
    info = pin(info)
    served = info.family == "api"
    device_kind = "server" if served else planned_device(device)
    config = RunConfig(
        task=task_obj.name,
        model=info,
        data=task_data.info,
        generation=GenerationInfo(max_new_tokens=max_new_tokens or "auto", min_new_tokens=min_new_tokens),
        prompt=task_obj.prompt_identity(),
        prompt_name=getattr(task_obj, "prompt", "default"),
        task_source=getattr(task_obj, "source", ""),
        fields=task_obj.field_infos(),
        limit=limit,
        batch_size=batch_size,
        device=device_kind,
        dtype="server" if served else dtype or ("bfloat16" if device_kind.startswith("cuda") else "float32"),
        max_error_rate=max_error_rate,
        metric_specs=task_obj.metric_specs(),
    )
    w = world()
    join(device_kind)  # a data-parallel run (torchrun / accelerate launch): one process per shard
    store = RunStore.open(output_dir, config, fresh=fresh, rank=w.rank, world=w.size)
    barrier()  # rank 0 has cleared a --fresh directory before anyone reads it
    console = Console(quiet=quiet or not w.main)
    finished = store.finished()
    if finished is not None:  # before loading the model: a finished re-run costs nothing
        if finished.scoring != task_obj.scoring_identity() and w.main:
            finished = rescore(task_obj, store, task_data, finished)
            console.print(f"[yellow]re-scored {store.dir}: the task's parser or scorers changed[/yellow]")
        else:
            console.print(f"[dim]already finished: {store.dir} (--fresh to redo)[/dim]")
        print_metrics(finished, console)
        return store.dir

    from backends import backend_for, get_backend

    options = {"concurrency": concurrency} if served and concurrency else {}
    if device is None and device_kind == "cuda" and w.size > 1:
        device = f"cuda:{w.local_rank}"  # one process per GPU
    generator = get_backend(backend_for(info.family)).load_generator(
        info, device=device or device_kind, dtype=config.dtype, **options
    )
    config.device = str(generator.device)
    if min_new_tokens:
        generator.min_new_tokens = min_new_tokens
    config.generation.resolved_max_new_tokens = max_new_tokens or budget(generator, task_obj, task_data)
    config.versions, config.git_sha = library_versions(), git_sha()
    config.created = datetime.now(UTC).isoformat(timespec="seconds")
    if w.main:
        store.write_config(config)
        store.consolidate()  # an interrupted data-parallel run's rank files, whatever its process count
    barrier()

    done = {i for i, r in latest(store.records()).items() if r.error is None}
    todo = [s for s in task_data.samples if s.id not in done]
    if len(todo) < len(task_data.samples):
        console.print(f"[dim]resuming {store.dir}: {len(task_data.samples) - len(todo)} samples done[/dim]")
    mine = shard(todo, w.rank, w.size, cost=image_cost) if w.size > 1 else todo
    try:
        _, size = generate_records(
            task_obj,
            generator,
            mine,
            batch_size=batch_size,
            max_new_tokens=config.generation.resolved_max_new_tokens,
            on_records=store.append,
            max_consecutive_errors=max_consecutive_errors,
            progress=None if quiet or not w.main else f"{task_obj.name} / {info.name}",
        )
        outcome: tuple[str, int | str] = ("done", size)
    except HarnessError as err:
        if w.size == 1:
            raise
        outcome = ("failed", str(err))
    outcomes = gather(outcome)  # every rank waits here for the others: no rank is left at a barrier
    failed = [str(o[1]) for o in outcomes if o[0] == "failed"]
    if failed:
        raise HarnessError(failed[0])
    if w.main:
        records = store.consolidate(order=[s.id for s in task_data.samples])
        sizes = [int(o[1]) for o in outcomes]
        metrics = summarise(
            task_obj, info, task_data, records, time.perf_counter() - started, max_error_rate, min(sizes)
        )
        metrics.peak_memory_gb = peak_memory_gb(config.device)
        store.finish(metrics)
        print_metrics(metrics, console)
    barrier()  # every rank returns a finished run directory
    return store.dir


def peak_memory_gb(device: str) -> float | None:
    """The GPU memory the run's generation peaked at (None on a CPU: no allocator to ask)."""
    if not device.startswith("cuda"):
        return None
    import torch

    return round(torch.cuda.max_memory_allocated(device) / 1024**3, 3)


def image_cost(sample) -> float:
    """A sample's expected generation cost for sharding: its image's pixels (the image token count
    grows with them); read from the file header, nothing decoded."""
    from PIL import Image

    try:
        with Image.open(sample.image) as image:
            return float(image.width * image.height)
    except OSError:
        return 0.0


def planned_device(device: str | None) -> str:
    """The device a run will use, known before the model loads (it is part of the run's identity).

    Without a GPU device node there is no CUDA: answered without importing torch, so that a
    finished re-run stays fast.
    """
    if device:
        return device
    if not any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg")):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def budget(generator, task: Task, data: TaskData) -> int:
    """max_new_tokens when not given: the longest target in tokens, plus a quarter and 8 tokens.

    Sized from the catalog's longest targets (all splits, recorded in the data info), or from the
    split's own targets when a task records none, so that a well-formed answer is never cut.
    """
    targets = data.info.budget_targets or [task.target(s) for s in data.samples]
    return budget_for([generator.count_tokens(t) for t in targets])


def budget_for(target_tokens: list[int]) -> int:
    return math.ceil(1.25 * max(target_tokens, default=48)) + 8


def _get_task(name: str, prompt: str = "default") -> Task:
    from tasks import get_task

    try:
        return get_task(name, prompt=prompt)
    except KeyError as err:
        raise HarnessError(str(err.args[0])) from err


def library_versions() -> dict[str, str]:
    versions = {"harness": harness.__version__}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def git_sha() -> str | None:
    """The checkout's commit (``+dirty`` with local changes); None outside a git checkout."""
    root = Path(harness.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}+dirty" if dirty else sha or None
