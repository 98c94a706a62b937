"""The evaluation loop: resolve, load data, resume, generate in batches, score, store, summarise.

Error policy, so that no number is printed as if nothing went wrong:

- Per sample, in the one generation loop (harness/generation.py): a bad sample is recorded with its
  error and counted; consecutive generation errors stop the run; out of memory halves the batch.
- A re-run retries errored samples (the retry's record supersedes the error's).
- More than ``max_error_rate`` of the samples errored: the run is written as "incomplete"
  (metrics.json says so), the CLI exits non-zero and reports refuse it unless told otherwise.
"""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from rich.console import Console

from backends.devices import peak_memory_gb, planned_device
from backends.families import get_family
from harness.core.errors import HarnessError
from harness.core.leakage import check_adapter_never_saw
from harness.core.schema import TRAIN_MANIFEST_FILE, GenerationInfo, ModelInfo, RunConfig
from harness.core.store import RunStore, latest, read_manifest
from harness.distributed import World, barrier, gather, join, shard, world
from harness.generation import budget, generate_records
from harness.identity import pin
from harness.models import resolve
from harness.options import EvalOptions
from harness.results import print_metrics, rescore, summarise
from tasks import get_task
from tasks.base import Task, TaskData

VERSIONED = ("harness", "torch", "transformers", "peft", "datasets", "accelerate", "tokenizers", "pillow")
REPO = Path(__file__).resolve().parents[1]  # the checkout, when the package runs from one


def run_eval(task: str | Task, model: str | ModelInfo, options: EvalOptions | None = None) -> Path:
    """Evaluate ``model`` on ``task``; returns the run directory. A finished run is not redone.

    ``options`` (harness.options.EvalOptions): data, split, limit, batch size, prompt, budget, error
    policy, device, ... A finished identical run is re-printed (re-scored when the task's parser or
    scorers changed) without loading the model.
    """
    started = time.perf_counter()
    options = options or EvalOptions()
    task_obj = get_task(task, prompt=options.prompt) if isinstance(task, str) else task
    info = (
        model if isinstance(model, ModelInfo) else resolve(model, options.revision, options.trust_remote_code)
    )
    if options.num_crops:
        info = info.model_copy(update={"num_crops": options.num_crops})
    if options.max_image_tokens:
        info = info.model_copy(update={"max_image_tokens": options.max_image_tokens})
    data = task_obj.load(options.data, options.split, limit=options.limit)
    if info.adapter:
        manifest = Path(info.adapter) / TRAIN_MANIFEST_FILE
        if manifest.is_file():  # a bare peft adapter trained elsewhere records nothing to check
            check_adapter_never_saw(read_manifest(manifest), manifest, task_obj.name, data.samples, data.info)
    if options.min_new_tokens and get_family(info.family).served:
        raise HarnessError(
            "--min-new-tokens is for in-process speed benchmarks: a served model stops where it stops"
        )
    config = run_config(task_obj, pin(info), data, options)
    w = world()
    join(config.device)  # a data-parallel run (torchrun / accelerate launch): one process per shard
    store = RunStore.open(options.output_dir, config, fresh=options.fresh, rank=w.rank, world=w.size)
    barrier()  # rank 0 has cleared a --fresh directory before anyone reads it
    console = Console(quiet=options.quiet or not w.main)
    finished = store.finished()
    if finished is not None:  # before loading the model: a finished re-run costs nothing
        if finished.scoring != task_obj.scoring_identity() and w.main:
            finished = rescore(task_obj, store, data, finished)
            console.print(f"[yellow]re-scored {store.dir}: the task's parser or scorers changed[/yellow]")
        else:
            console.print(f"[dim]already finished: {store.dir} (--fresh to redo)[/dim]")
        print_metrics(finished, console)
        return store.dir

    generator = _load_generator(config, options, w)
    config.device = str(generator.device)
    config.generation.resolved_max_new_tokens = options.max_new_tokens or budget(
        generator.count_tokens, task_obj, data
    )
    config.versions, config.git_sha = library_versions(), git_sha()
    config.created = datetime.now(UTC).isoformat(timespec="seconds")
    if w.main:
        store.write_config(config)
        store.consolidate()  # an interrupted data-parallel run's rank files, whatever its process count
    barrier()
    sizes, timed = _generate(task_obj, generator, store, data, config, options, console, w)
    if w.main:
        records = store.consolidate(order=[s.id for s in data.samples])
        wall = time.perf_counter() - started
        metrics = summarise(task_obj, config.model, data, records, wall, options.max_error_rate, min(sizes))
        metrics.peak_memory_gb, metrics.timed = peak_memory_gb(config.device), timed
        store.finish(metrics)
        print_metrics(metrics, console)
    barrier()  # every rank returns a finished run directory
    return store.dir


def run_config(task: Task, info: ModelInfo, data: TaskData, options: EvalOptions) -> RunConfig:
    """Everything that identifies the run (its directory is named by a hash of it), before any model loads."""
    served = get_family(info.family).served
    device = "server" if served else planned_device(options.device)
    dtype = "server" if served else options.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    return RunConfig(
        task=task.name,
        model=info,
        data=data.info,
        generation=GenerationInfo(
            max_new_tokens=options.max_new_tokens or "auto", min_new_tokens=options.min_new_tokens
        ),
        prompt=task.prompt_identity(),
        prompt_name=task.prompt,
        task_source=getattr(task, "source", ""),
        fields=task.field_infos(),
        limit=options.limit,
        batch_size=options.batch_size,
        device=device,
        dtype=dtype,
        max_error_rate=options.max_error_rate,
        metric_specs=task.metric_specs(),
    )


def _load_generator(config: RunConfig, options: EvalOptions, w: World):
    from backends import get_backend

    device = options.device
    if device is None and config.device == "cuda" and w.size > 1:
        device = f"cuda:{w.local_rank}"  # one process per GPU
    backend = get_backend(get_family(config.model.family).backend)
    return backend.load_generator(config.model, device=device or config.device, dtype=config.dtype)


def _generate(
    task, generator, store: RunStore, data: TaskData, config: RunConfig, options, console, w: World
) -> list[int]:
    """Generate this process's share of the samples not done yet; every rank's last batch size.

    Several processes: a failure on one rank is gathered (no rank waits forever at a barrier) and
    raised on all.
    """
    done = {i for i, r in latest(store.records()).items() if r.error is None}
    todo = [s for s in data.samples if s.id not in done]
    if len(todo) < len(data.samples):
        console.print(f"[dim]resuming {store.dir}: {len(data.samples) - len(todo)} samples done[/dim]")
    mine = shard(todo, w.rank, w.size, cost=image_cost) if w.size > 1 else todo
    try:
        _, size = generate_records(
            task,
            generator,
            mine,
            batch_size=options.batch_size,
            max_new_tokens=config.generation.resolved_max_new_tokens,
            min_new_tokens=options.min_new_tokens,
            concurrency=options.concurrency if get_family(config.model.family).served else 1,
            on_records=store.append,
            max_consecutive_errors=options.max_consecutive_errors,
            progress=None if options.quiet or not w.main else f"{task.name} / {config.model.name}",
        )
        outcome: tuple[str, int | str] = ("done", size)
    except HarnessError as err:
        if w.size == 1:
            raise
        outcome = ("failed", str(err))
    outcomes = gather(outcome)  # every rank waits here for the others
    failed = [str(o[1]) for o in outcomes if o[0] == "failed"]
    if failed:
        raise HarnessError(failed[0])
    return [int(o[1]) for o in outcomes], len(todo)


def image_cost(sample) -> float:
    """A sample's expected generation cost for sharding: its image's pixels (the image token count
    grows with them); read from the file header, nothing decoded."""
    from PIL import Image

    try:
        with Image.open(sample.image) as image:
            return float(image.width * image.height)
    except OSError:
        return 0.0


def library_versions() -> dict[str, str]:
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def git_sha() -> str | None:
    """The checkout's commit (``+dirty`` with local changes); None outside a git checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}+dirty" if dirty else sha or None
