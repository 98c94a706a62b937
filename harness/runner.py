"""The evaluation loop: resolve, load data, resume, generate in batches, score, store, summarise.

One bad sample never kills a run: an unreadable image or a failed generation becomes that sample's
Record with ``error`` set (scored as a miss and counted), and the run goes on.
"""

from __future__ import annotations

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
from harness.models import resolve
from harness.schema import GenerationInfo, ModelInfo, Parsed, Record, RunConfig, RunMetrics, Sample
from harness.store import RunStore
from tasks.base import Task, TaskData

VERSIONED = ("torch", "transformers", "peft", "datasets", "accelerate", "tokenizers", "pillow")


def run_eval(
    task: str | Task,
    model: str | ModelInfo,
    data: str,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    output_dir: Path = Path("runs"),
    fresh: bool = False,
    max_new_tokens: int = 64,
    revision: str | None = None,
    trust_remote_code: bool = False,
    device: str | None = None,
) -> Path:
    """Evaluate ``model`` on ``task``; returns the run directory. A finished run is not redone."""
    started = time.perf_counter()
    if batch_size < 1:
        raise HarnessError(f"--batch-size must be >= 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise HarnessError(f"--limit must be >= 1, got {limit}")
    task_obj = _get_task(task) if isinstance(task, str) else task
    info = model if isinstance(model, ModelInfo) else resolve(model, revision, trust_remote_code)
    task_data = task_obj.load(data, split, seed=seed, limit=limit)
    config = RunConfig(
        task=task_obj.name,
        model=info,
        data=task_data.info,
        generation=GenerationInfo(max_new_tokens=max_new_tokens),
        seed=seed,
        limit=limit,
        batch_size=batch_size,
    )
    store = RunStore.open(output_dir, config, fresh=fresh)
    console = Console()
    finished = store.finished()
    if finished is not None:  # before loading the model: a finished re-run costs nothing
        console.print(f"[dim]already finished: {store.dir} (--fresh to redo)[/dim]")
        print_metrics(finished, console)
        return store.dir

    from backends import get_backend

    generator = get_backend("hf").load_generator(info, device=device)
    config.device = str(generator.device)
    config.dtype = str(generator.dtype).removeprefix("torch.")
    config.versions, config.git_sha = library_versions(), git_sha()
    config.created = datetime.now(UTC).isoformat(timespec="seconds")
    store.write_config(config)

    done = {r.id for r in store.records()}
    todo = [s for s in task_data.samples if s.id not in done]
    if done:
        console.print(f"[dim]resuming {store.dir}: {len(task_data.samples) - len(todo)} samples done[/dim]")
    with _progress() as progress:
        bar = progress.add_task(f"{task_obj.name} / {info.name}", total=len(todo))
        for i in range(0, len(todo), batch_size):
            batch = todo[i : i + batch_size]
            store.append(run_batch(task_obj, generator, batch, max_new_tokens))
            progress.advance(bar, len(batch))

    metrics = summarise(task_obj, info, task_data, store.records(), time.perf_counter() - started)
    store.finish(metrics)
    print_metrics(metrics, console)
    return store.dir


def _get_task(name: str) -> Task:
    from tasks import get_task

    try:
        return get_task(name)
    except KeyError as err:
        raise HarnessError(str(err.args[0])) from err


def run_batch(task: Task, generator, samples: list[Sample], max_new_tokens: int) -> list[Record]:
    """Records for one batch, in sample order; per-sample errors instead of a failed batch."""
    outputs: dict[str, tuple[str | None, float | None, str | None]] = {}  # id -> (output, latency, error)
    prompts: dict[str, str] = {}
    ready = []
    for sample in samples:
        prompts[sample.id] = ""
        try:
            prompts[sample.id] = generator.render(task.messages(sample))
            image = _open_image(sample.image)
        except Exception as err:  # one unreadable image is that sample's error
            outputs[sample.id] = (None, None, f"image: {_one_line(err)}")
        else:
            ready.append((sample, image))
    if ready:
        t0 = time.perf_counter()
        try:
            texts = generator.generate(
                [prompts[s.id] for s, _ in ready], [im for _, im in ready], max_new_tokens
            )
            latency = (time.perf_counter() - t0) / len(ready)
            outputs.update({s.id: (text, latency, None) for (s, _), text in zip(ready, texts, strict=True)})
        except Exception:  # retry one by one to find the sample at fault
            for sample, image in ready:
                outputs[sample.id] = _generate_one(generator, prompts[sample.id], image, max_new_tokens)
    return [_record(task, s, prompts[s.id], *outputs[s.id]) for s in samples]


def _generate_one(
    generator, prompt: str, image, max_new_tokens: int
) -> tuple[str | None, float | None, str | None]:
    t0 = time.perf_counter()
    try:
        return generator.generate([prompt], [image], max_new_tokens)[0], time.perf_counter() - t0, None
    except Exception as err:
        return None, None, f"generation: {_one_line(err)}"


def _open_image(path: str):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")  # decodes now, inside the sample's try


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def _record(
    task: Task, sample: Sample, prompt: str, output: str | None, latency, error: str | None
) -> Record:
    # An errored sample is scored as an empty answer: it counts as a miss, not as a hole in the data.
    parsed, scores = Parsed(), {}
    try:
        parsed = task.parse(output) if output is not None and error is None else Parsed()
        scores = task.score(sample.truth, parsed)
    except Exception as err:  # a scorer bug on one answer is that sample's error
        error = error or f"scoring: {_one_line(err)}"
    return Record(
        id=sample.id,
        image=sample.image,
        prompt=prompt,
        output=output,
        parsed=parsed,
        truth=sample.truth,
        scores=scores,
        latency_s=latency,
        error=error,
    )


def summarise(
    task: Task, info: ModelInfo, data: TaskData, records: list[Record], wall_s: float
) -> RunMetrics:
    """Aggregate the records of this split's samples (first record per id, in sample order)."""
    by_id: dict[str, Record] = {}
    for record in records:
        by_id.setdefault(record.id, record)
    ordered = [by_id[s.id] for s in data.samples if s.id in by_id]
    values, per_category = task.aggregate(ordered)
    return RunMetrics(
        task=task.name,
        model=info.name,
        n=len(ordered),
        n_errors=sum(r.error is not None for r in ordered),
        # A parse failure: the model answered but the parser could read no field at all.
        n_parse_failures=sum(
            r.error is None and all(v is None for v in r.parsed.model_dump().values()) for r in ordered
        ),
        n_excluded=max(len(data.excluded), data.info.n_excluded),
        metrics=values,
        per_category=per_category,
        wall_s=round(wall_s, 3),
    )


def print_metrics(metrics: RunMetrics, console: Console | None = None) -> None:
    table = Table(title=f"{metrics.task} / {metrics.model}")
    for column in ("metric", "value", "95% CI", "n"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, m in metrics.metrics.items():
        ci = f"[{m.ci_low:.3f}, {m.ci_high:.3f}]" if m.ci_low is not None and m.ci_high is not None else "-"
        table.add_row(name, "-" if m.value is None else f"{m.value:.3f}", ci, str(m.n))
    console = console or Console()
    console.print(table)
    console.print(
        f"n={metrics.n}  errors={metrics.n_errors}  parse failures={metrics.n_parse_failures}  "
        f"excluded before the run={metrics.n_excluded}"
    )


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
