"""The evaluation loop: resolve, load data, resume, generate in batches, score, store, summarise.

Error policy, so that no number is printed as if nothing went wrong:

- One bad sample never kills a run: an unreadable image or a failed generation becomes that sample's
  Record with ``error`` set (scored as a miss and counted), and the run goes on.
- A re-run retries errored samples (the retry's record supersedes the error's).
- ``max_consecutive_errors`` generation errors in a row stop the run with the underlying error: the
  model or device is broken, not one sample.
- More than ``max_error_rate`` of the samples errored: the run is written as "incomplete"
  (metrics.json says so), the CLI exits non-zero and reports refuse it unless told otherwise.
- Out of memory at batch N: the batch is halved (said once) and the size that ran is recorded.
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
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

import harness
from harness.errors import HarnessError
from harness.models import pin, resolve
from harness.schema import GenerationInfo, ModelInfo, Record, RunConfig, RunMetrics, Sample
from harness.store import RunStore, latest
from tasks.base import Task, TaskData

VERSIONED = ("torch", "transformers", "peft", "datasets", "accelerate", "tokenizers", "pillow")
MAX_CONSECUTIVE_ERRORS = 8
MAX_ERROR_RATE = 0.05


class OutOfMemory(Exception):
    """A batch of more than one sample did not fit: the caller halves the batch."""


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
) -> Path:
    """Evaluate ``model`` on ``task``; returns the run directory. A finished run is not redone.

    ``data`` None is the task's own data; ``max_new_tokens`` None sizes the budget from the task's
    longest targets (see :func:`budget`); ``prompt`` picks the task's prompt variant.
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
    task_data = task_obj.load(data, split, limit=limit)
    if info.adapter:
        from harness.train import check_adapter_never_saw

        check_adapter_never_saw(Path(info.adapter), task_obj.name, task_data)
    info = pin(info)
    device_kind = planned_device(device)
    config = RunConfig(
        task=task_obj.name,
        model=info,
        data=task_data.info,
        generation=GenerationInfo(max_new_tokens=max_new_tokens or "auto"),
        prompt=task_obj.prompt_identity(),
        prompt_name=getattr(task_obj, "prompt", "default"),
        task_source=getattr(task_obj, "source", ""),
        fields=task_obj.field_infos(),
        limit=limit,
        batch_size=batch_size,
        device=device_kind,
        dtype=dtype or ("bfloat16" if device_kind.startswith("cuda") else "float32"),
        max_error_rate=max_error_rate,
        metric_specs=task_obj.metric_specs(),
    )
    store = RunStore.open(output_dir, config, fresh=fresh)
    console = Console()
    finished = store.finished()
    if finished is not None:  # before loading the model: a finished re-run costs nothing
        if finished.scoring != task_obj.scoring_identity():
            finished = rescore(task_obj, store, task_data, finished)
            console.print(f"[yellow]re-scored {store.dir}: the task's parser or scorers changed[/yellow]")
        else:
            console.print(f"[dim]already finished: {store.dir} (--fresh to redo)[/dim]")
        print_metrics(finished, console)
        return store.dir

    from backends import get_backend

    generator = get_backend("hf").load_generator(info, device=device or device_kind, dtype=config.dtype)
    config.device = str(generator.device)
    config.generation.resolved_max_new_tokens = max_new_tokens or budget(generator, task_obj, task_data)
    config.versions, config.git_sha = library_versions(), git_sha()
    config.created = datetime.now(UTC).isoformat(timespec="seconds")
    store.write_config(config)

    done = {i for i, r in latest(store.records()).items() if r.error is None}
    todo = [s for s in task_data.samples if s.id not in done]
    if len(todo) < len(task_data.samples):
        console.print(f"[dim]resuming {store.dir}: {len(task_data.samples) - len(todo)} samples done[/dim]")
    size = _generate_all(
        task_obj,
        generator,
        todo,
        store,
        config,
        console,
        max_consecutive_errors,
        f"{task_obj.name} / {info.name}",
    )
    metrics = summarise(
        task_obj, info, task_data, store.records(), time.perf_counter() - started, max_error_rate, size
    )
    store.finish(metrics)
    print_metrics(metrics, console)
    return store.dir


def _generate_all(task, generator, todo, store, config, console, max_consecutive_errors, title) -> int:
    """Generate, score and append every sample of ``todo``; returns the batch size that ran last."""
    size, consecutive, i = config.batch_size, 0, 0
    budget_tokens = config.generation.resolved_max_new_tokens
    with _progress() as progress:
        bar = progress.add_task(title, total=len(todo))
        while i < len(todo):
            batch = todo[i : i + size]
            try:
                records = run_batch(task, generator, batch, budget_tokens)
            except OutOfMemory:
                size = max(1, len(batch) // 2)
                console.print(
                    f"[yellow]out of memory at batch {len(batch)}: continuing at batch {size}[/yellow]"
                )
                continue
            store.append(records)
            progress.advance(bar, len(batch))
            i += len(batch)
            for record in records:
                failed = record.error is not None and record.error.startswith("generation")
                consecutive = consecutive + 1 if failed else 0
                if consecutive >= max_consecutive_errors:
                    raise HarnessError(
                        f"stopped after {consecutive} generation errors in a row (the model or device is "
                        f"broken, not one sample); the last: {record.error}. Fix it and re-run: errored "
                        f"samples are retried ({store.dir})"
                    )
    return size


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


def is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, MemoryError) or "out of memory" in str(err).lower()


def run_batch(task: Task, generator, samples: list[Sample], max_new_tokens: int) -> list[Record]:
    """Records for one batch, in sample order; per-sample errors instead of a failed batch.

    Raises OutOfMemory when a batch of several samples does not fit (the caller halves it); any other
    failure of the batch is retried one by one to find the sample at fault.
    """
    results: dict[str, dict] = {}
    prompts: dict[str, str] = {}
    ready = []
    for sample in samples:
        prompts[sample.id] = ""
        try:
            messages = task.messages(sample)
            prompts[sample.id] = generator.render(messages)
            images = [_open_image(path) for path in image_paths(messages, sample)]
        except Exception as err:  # one unreadable image is that sample's error
            results[sample.id] = {"error": f"image: {_one_line(err)}"}
        else:
            ready.append((sample, images))
    if ready:
        t0 = time.perf_counter()
        try:
            answers = generator.generate(
                [prompts[s.id] for s, _ in ready], [im for _, im in ready], max_new_tokens
            )
            latency = (time.perf_counter() - t0) / len(ready)
            for (sample, _), answer in zip(ready, answers, strict=True):
                results[sample.id] = _answer(answer, latency, len(ready))
        except Exception as err:
            if is_out_of_memory(err) and len(ready) > 1:
                _release_memory(generator)
                raise OutOfMemory(str(err)) from err
            for sample, image in ready:
                results[sample.id] = _generate_one(generator, prompts[sample.id], image, max_new_tokens)
    return _records(task, samples, prompts, results)


def _answer(answer, latency: float, batch: int) -> dict:
    return {
        "output": answer.text,
        "n_tokens": answer.n_tokens,
        "stop": answer.stop,
        "latency_s": latency,
        "batch_size": batch,
    }


def _generate_one(generator, prompt: str, image, max_new_tokens: int) -> dict:
    t0 = time.perf_counter()
    try:
        answer = generator.generate([prompt], [image], max_new_tokens)[0]
    except Exception as err:
        if is_out_of_memory(err):
            _release_memory(generator)
        return {"error": f"generation: {_one_line(err)}", "batch_size": 1}
    return _answer(answer, time.perf_counter() - t0, 1)


def _release_memory(generator) -> None:
    release = getattr(generator, "release_memory", None)
    if release is not None:
        release()


def image_paths(messages: list[dict], sample: Sample) -> list[str]:
    """The images a conversation shows, in order (few-shot examples first, the sample's last)."""
    parts = [
        p
        for m in messages
        if isinstance(m["content"], list)
        for p in m["content"]
        if p.get("type") == "image"
    ]
    return [p.get("path") or sample.image for p in parts]


def _open_image(path: str):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")  # decodes now, inside the sample's try


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def _records(
    task: Task, samples: list[Sample], prompts: dict[str, str], results: dict[str, dict]
) -> list[Record]:
    """Parse and score a batch in one call. An errored sample is scored as an empty answer: it counts
    as a miss, not as a hole in the data."""
    parsed = []
    for sample in samples:
        result = results[sample.id]
        try:
            parsed.append(task.parse(result["output"]) if "output" in result else {})
        except Exception as err:  # a parser bug on one answer is that sample's error
            result.setdefault("error", f"parsing: {_one_line(err)}")
            parsed.append({})
    try:
        scores = task.score([s.truth for s in samples], parsed)
    except Exception as err:  # a scorer bug costs this batch's scores, recorded on each sample
        scores = [{} for _ in samples]
        for sample in samples:
            results[sample.id].setdefault("error", f"scoring: {_one_line(err)}")
    return [
        Record(
            id=s.id, image=s.image, prompt=prompts[s.id], truth=s.truth, parsed=p, scores=sc, **results[s.id]
        )
        for s, p, sc in zip(samples, parsed, scores, strict=True)
    ]


def rescore(task: Task, store: RunStore, data: TaskData, old: RunMetrics) -> RunMetrics:
    """Re-parse and re-score a finished run's outputs with the task's current parser and scorers.

    The outputs do not depend on the parser, so nothing is generated again; predictions.jsonl and
    metrics.json are rewritten atomically.
    """
    by_id = latest(store.records())
    ordered = [by_id[s.id] for s in data.samples if s.id in by_id]
    parsed = [task.parse(r.output) if r.error is None and r.output is not None else {} for r in ordered]
    scores = task.score([r.truth for r in ordered], parsed)
    fresh = [
        r.model_copy(update={"parsed": p, "scores": s})
        for r, p, s in zip(ordered, parsed, scores, strict=True)
    ]
    store.replace_records(fresh)
    config = store.read_config()
    metrics = summarise(
        task, config.model, data, fresh, old.wall_s or 0.0, config.max_error_rate, old.batch_size
    )
    store.finish(metrics)
    return metrics


def summarise(
    task: Task,
    info: ModelInfo,
    data: TaskData,
    records: list[Record],
    wall_s: float,
    max_error_rate: float = MAX_ERROR_RATE,
    batch_size: int | None = None,
) -> RunMetrics:
    """Aggregate the latest record of each of this split's samples, in sample order."""
    by_id = latest(records)
    ordered = [by_id[s.id] for s in data.samples if s.id in by_id]
    values, per_group = task.aggregate(ordered)
    n_errors = sum(r.error is not None for r in ordered)
    reason = None
    if len(ordered) < len(data.samples):
        reason = f"{len(data.samples) - len(ordered)} of {len(data.samples)} samples have no record"
    elif ordered and n_errors / len(ordered) > max_error_rate:
        reason = (
            f"{n_errors} of {len(ordered)} samples errored ({n_errors / len(ordered):.1%} > the "
            f"--max-error-rate of {max_error_rate:.1%}); re-run to retry them"
        )
    return RunMetrics(
        task=task.name,
        model=info.name,
        status="incomplete" if reason else "complete",
        reason=reason,
        n=len(ordered),
        n_errors=n_errors,
        n_parse_failures=sum(r.error is None and r.scores.get("parsed") == 0 for r in ordered),
        n_truncated=sum(r.stop == "length" for r in ordered),
        n_excluded=max(len(data.excluded), data.info.n_excluded),
        batch_size=batch_size,
        scoring=task.scoring_identity(),
        metrics=values,
        metric_specs=task.metric_specs(),
        per_group=per_group,
        wall_s=round(wall_s, 3),
    )


def print_metrics(metrics: RunMetrics, console: Console | None = None) -> None:
    labels = {spec.name: spec.label for spec in metrics.metric_specs}
    table = Table(title=f"{metrics.task} / {metrics.model}")
    for column in ("metric", "value", "95% CI", "n"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, m in metrics.metrics.items():
        ci = f"[{m.ci_low:.3f}, {m.ci_high:.3f}]" if m.ci_low is not None and m.ci_high is not None else "-"
        table.add_row(labels.get(name, name), "-" if m.value is None else f"{m.value:.3f}", ci, str(m.n))
    console = console or Console()
    console.print(table)
    console.print(
        f"n={metrics.n}  errors={metrics.n_errors}  not fully parsed={metrics.n_parse_failures}  "
        f"truncated={metrics.n_truncated}  excluded before the run={metrics.n_excluded}"
    )
    if metrics.status != "complete":
        console.print(f"[bold red]INCOMPLETE:[/bold red] {metrics.reason}")


class _Rate(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} samples/s" if speed else "- samples/s", style="cyan")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )


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
