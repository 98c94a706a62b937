"""The one generation loop: `harness run` and the training callback both generate through it.

Batches of samples -> prompts and images (from the task's messages) -> the generator -> parsed and
scored Records, with the error policy that keeps numbers honest:

- one bad sample never kills a run: an unreadable image or a failed generation is that sample's
  Record with ``error`` set (scored as a miss and counted);
- ``max_consecutive_errors`` generation errors in a row stop with the underlying error (the model
  or the device is broken, not one sample);
- out of memory at batch N halves the batch (said once per halving); the size that ran is recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable

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

from harness.core.errors import HarnessError
from harness.core.schema import Record, Sample
from tasks.base import Task

MAX_CONSECUTIVE_ERRORS = 8


class OutOfMemory(Exception):
    """A batch of more than one sample did not fit: the caller halves the batch."""


def generate_records(
    task: Task,
    generator,
    samples: list[Sample],
    *,
    batch_size: int,
    max_new_tokens: int,
    on_records: Callable[[list[Record]], None] | None = None,
    max_consecutive_errors: int = MAX_CONSECUTIVE_ERRORS,
    progress: str | None = None,
    console: Console | None = None,
) -> tuple[list[Record], int]:
    """Records of ``samples`` in order, and the batch size that ran last.

    ``on_records`` receives each batch as it is done (the run store appends it); ``progress`` names
    a progress bar (None: quiet, as inside training).
    """
    console = console or Console(stderr=True)
    out: list[Record] = []
    size, consecutive, i = batch_size, 0, 0
    bar = _progress(console) if progress else None
    task_id = bar.add_task(progress, total=len(samples)) if bar else None
    if bar:
        bar.start()
    try:
        while i < len(samples):
            batch = samples[i : i + size]
            try:
                records = run_batch(task, generator, batch, max_new_tokens)
            except OutOfMemory:
                size = max(1, len(batch) // 2)
                console.print(
                    f"[yellow]out of memory at batch {len(batch)}: continuing at batch {size}[/yellow]"
                )
                continue
            if on_records is not None:
                on_records(records)
            out += records
            i += len(batch)
            if bar:
                bar.advance(task_id, len(batch))
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
    return out, size


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
        "prompt_tokens": answer.prompt_tokens,
        "stop": answer.stop,
        "latency_s": answer.latency_s if answer.latency_s is not None else latency,
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
