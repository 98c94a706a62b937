"""The one generation loop: `harness run` and the training callback both generate through it.

Batches of samples -> one request each (the task's messages, their images, the generation
settings) -> the generator -> parsed and scored Records, with the error policy that keeps numbers
honest:

- one bad sample never kills a run: an unreadable image or a failed generation is that sample's
  Record with ``error`` set (scored as a miss and counted);
- ``max_consecutive_errors`` generation errors in a row stop with the underlying error (the model
  or the device is broken, not one sample);
- out of memory at batch N halves the batch (said once per halving); the size that ran is recorded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import closing

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from backends.base import Generation, GenerationRequest, Generator, image_paths
from harness.core.errors import HarnessError, one_line
from harness.core.schema import Record, Sample
from harness.options import EvalOptions
from tasks.base import Task, TaskData

MAX_CONSECUTIVE_ERRORS = EvalOptions.model_fields["max_consecutive_errors"].default


def budget(count_tokens: Callable[[str], int], task: Task, data: TaskData) -> int:
    """max_new_tokens when not given: the longest target in the model's tokens, plus a quarter and 8.

    Sized from the catalog's longest targets (all splits, recorded in the data info), or from the
    split's own targets when a task records none, so that a well-formed answer is never cut. The
    same budget in `harness run` and in the training callback.
    """
    targets = data.info.budget_targets or [task.target(s) for s in data.samples]
    return math.ceil(1.25 * max(map(count_tokens, targets), default=48)) + 8


class OutOfMemory(Exception):
    """A batch of more than one sample did not fit: the caller halves the batch."""


def generate_records(
    task: Task,
    generator: Generator,
    samples: list[Sample],
    *,
    batch_size: int,
    max_new_tokens: int,
    min_new_tokens: int | None = None,
    concurrency: int = 1,
    on_records: Callable[[list[Record]], None] | None = None,
    max_consecutive_errors: int = MAX_CONSECUTIVE_ERRORS,
    progress: str | None = None,
    console: Console | None = None,
) -> tuple[list[Record], int]:
    """Records of ``samples`` in order, and the batch size that ran last.

    In-process models answer batches of ``batch_size``. A served model (``concurrency`` > 1) keeps
    ``concurrency`` requests in flight all the time, one sample each: a slow answer holds its own
    slot only, never a batch. ``on_records`` receives records as they are done (the run store
    appends them; the order in which they finish does not matter); ``progress`` names a progress
    bar (None: quiet, as inside training).
    """
    settings = {"max_new_tokens": max_new_tokens, "min_new_tokens": min_new_tokens}
    console = console or Console(stderr=True)
    sizes = [batch_size if concurrency <= 1 else 1]
    if concurrency > 1:
        produced = _as_completed(task, generator, samples, settings, concurrency)
    else:
        produced = _in_batches(task, generator, samples, settings, sizes, console)
    done: dict[str, Record] = {}
    consecutive = 0
    bar = _progress(console) if progress else None
    task_id = bar.add_task(progress, total=len(samples)) if bar else None
    if bar:
        bar.start()
    try:
        with closing(produced):
            for records in produced:
                if on_records is not None:
                    on_records(records)
                done.update((r.id, r) for r in records)
                if bar:
                    bar.advance(task_id, len(records))
                for record in records:
                    failed = record.error is not None and record.error.startswith("generation")
                    consecutive = consecutive + 1 if failed else 0
                    if consecutive >= max_consecutive_errors:
                        raise HarnessError(
                            f"stopped after {consecutive} generation errors in a row (the model or device is "
                            f"broken, not one sample); the last: {record.error}. Fix it and re-run: errored "
                            "samples are retried"
                        )
    finally:
        if bar:
            bar.stop()
    return [done[s.id] for s in samples if s.id in done], sizes[-1]


def _in_batches(task, generator, samples, settings, sizes: list[int], console) -> Iterator[list[Record]]:
    """Batch after batch, in order; out of memory halves the batch (said once per halving)."""
    i = 0
    while i < len(samples):
        batch = samples[i : i + sizes[-1]]
        try:
            records = run_batch(task, generator, batch, settings)
        except OutOfMemory:
            sizes.append(max(1, len(batch) // 2))
            console.print(
                f"[yellow]out of memory at batch {len(batch)}: continuing at batch {sizes[-1]}[/yellow]"
            )
            continue
        i += len(batch)
        yield records


def _as_completed(task, generator, samples, settings, concurrency: int) -> Iterator[list[Record]]:
    """``concurrency`` one-sample requests in flight at all times; the records of whatever finished,
    as it finishes. Closing the iterator cancels what was not sent yet."""
    queue = iter(samples)
    pool = ThreadPoolExecutor(max_workers=concurrency)
    pending = set()

    def send() -> None:
        sample = next(queue, None)
        if sample is not None:
            pending.add(pool.submit(run_batch, task, generator, [sample], settings))

    try:
        for _ in range(concurrency):
            send()
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            pending.difference_update(finished)
            for _ in finished:
                send()  # the window stays full: a new request for each answer
            records, failures = [], []
            for future in finished:
                try:
                    records += future.result()
                except Exception as err:  # noqa: BLE001 - the others' records are stored first
                    failures.append(err)
            yield records
            if failures:
                raise failures[0]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, MemoryError) or "out of memory" in str(err).lower()


def run_batch(task: Task, generator: Generator, samples: list[Sample], settings: dict) -> list[Record]:
    """Records for one batch, in sample order; per-sample errors instead of a failed batch.

    ``settings`` are the requests' generation settings (max_new_tokens, min_new_tokens). Raises
    OutOfMemory when a batch of several samples does not fit (the caller halves it); any other
    failure of the batch is retried one by one to find the sample at fault.
    """
    results: dict[str, dict] = {}
    prompts: dict[str, str] = {}
    ready: list[tuple[Sample, GenerationRequest]] = []
    for sample in samples:
        prompts[sample.id] = ""
        try:
            messages = task.messages(sample)
            prompts[sample.id] = generator.render(messages)
            images = [_open_image(path) for path in image_paths(messages, sample.image)]
            ready.append((sample, GenerationRequest(messages, images, **settings)))
        except Exception as err:  # one unreadable image is that sample's error
            results[sample.id] = {"error": f"image: {one_line(err)}"}
    if ready:
        t0 = time.perf_counter()
        try:
            answers = generator.generate([request for _, request in ready])
            latency = (time.perf_counter() - t0) / len(ready)
            for (sample, _), answer in zip(ready, answers, strict=True):
                results[sample.id] = _answer(answer, latency, len(ready))
        except Exception as err:
            if is_out_of_memory(err) and len(ready) > 1:
                generator.release_memory()
                raise OutOfMemory(str(err)) from err
            if len(ready) == 1:  # nothing to tell apart: asking again would only repeat the failure
                results[ready[0][0].id] = _failed(generator, err)
            else:
                for sample, request in ready:
                    results[sample.id] = _generate_one(generator, request)
    return _records(task, samples, prompts, results)


def _answer(answer: Generation, latency: float, batch: int) -> dict:
    return {
        "output": answer.text,
        "n_tokens": answer.n_tokens,
        "prompt_tokens": answer.prompt_tokens,
        "stop": answer.stop,
        "latency_s": answer.latency_s if answer.latency_s is not None else latency,
        "batch_size": batch,
    }


def _generate_one(generator: Generator, request: GenerationRequest) -> dict:
    t0 = time.perf_counter()
    try:
        answer = generator.generate([request])[0]
    except Exception as err:
        return _failed(generator, err)
    return _answer(answer, time.perf_counter() - t0, 1)


def _failed(generator: Generator, err: Exception) -> dict:
    if is_out_of_memory(err):
        generator.release_memory()
    return {"error": f"generation: {one_line(err)}", "batch_size": 1}


def _open_image(path: str):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")  # decodes now, inside the sample's try


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
            result.setdefault("error", f"parsing: {one_line(err)}")
            parsed.append({})
    try:
        scores = task.score([s.truth for s in samples], parsed)
    except Exception as err:  # a scorer bug costs this batch's scores, recorded on each sample
        scores = [{} for _ in samples]
        for sample in samples:
            results[sample.id].setdefault("error", f"scoring: {one_line(err)}")
    return [
        Record(
            id=s.id, image=s.image, prompt=prompts[s.id], truth=s.truth, parsed=p, scores=sc, **results[s.id]
        )
        for s, p, sc in zip(samples, parsed, scores, strict=True)
    ]


class _Rate(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} samples/s" if speed else "- samples/s", style="cyan")


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(),
        TimeElapsedColumn(),
        console=console,
    )
