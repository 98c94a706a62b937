"""Fake run directories for the report tests, written straight through harness.core.schema (no runner)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from harness.core.run import Failures
from harness.core.schema import (
    CONFIG_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    DataInfo,
    ModelInfo,
    Record,
    RunConfig,
    RunMetrics,
)
from tasks import get_task

TASK = get_task("burberry")
METRIC_SPECS = TASK.metric_specs()

CATEGORIES = ["Coats", "Scarves", "Bags"]


def image(path: Path, color: str = "red") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), color).save(path)
    return str(path)


def record(
    i: int,
    *,
    correct: bool,
    ape: float | None,
    sim: float,
    img: str = "",
    output: str | None = None,
    error: str | None = None,
    category: str | None = None,
) -> Record:
    """One sample: category/name right iff ``correct``; a price ``ape`` off the truth (None = no price)."""
    category = category or CATEGORIES[i % len(CATEGORIES)]
    truth = {"name": f"Product {i}", "category": category, "price": 100.0 + i}
    price = None if ape is None else truth["price"] * (1 + ape)
    parsed = {
        "name": truth["name"] if correct else "Other",
        "category": category if correct else "Hats",
        "price": price,
    }
    scores = {
        "name_similarity": sim,
        "name_exact": float(correct),
        "category_exact": float(correct),
        "category_mapped": float(correct),
        "price_within_10": float(ape is not None and ape <= 0.10),
        "price_within_25": float(ape is not None and ape <= 0.25),
        "price_abs_error": None if ape is None else abs(price - truth["price"]),
        "price_ape": ape,
        "price_log_error": None if ape is None else abs(__import__("math").log1p(ape)),
        "parsed": 1.0,
        "name_read": 1.0,
        "category_read": 1.0,
        "price_read": float(ape is not None),
    }
    if error:
        return Record(id=f"s{i:03d}", image=img, prompt="p", truth=truth, error=error)
    text = output if output is not None else f"{parsed['name']} | {parsed['category']} | {price}"
    return Record(
        id=f"s{i:03d}", image=img, prompt="p", output=text, parsed=parsed, truth=truth, scores=scores
    )


def write_run(
    root: Path,
    dirname: str,
    model: str,
    records: list[Record],
    *,
    fingerprint: str = "fp-test-1",
    created: str = "2026-01-01T00:00:00",
    source: str = "synthetic",
    torn: bool = False,
    status: str | None = "complete",  # None: unfinished (no metrics.json)
    path: str | None = None,
    specs=METRIC_SPECS,
    task: str = "burberry",
    fields=None,
    revision: str | None = None,
) -> Path:
    run = root / dirname
    run.mkdir(parents=True)
    config = RunConfig(
        task=task,
        model=ModelInfo(
            name=model,
            path=path or f"/models/{model}",
            adapter="/adapters/x" if "tuned" in model else None,
            revision=revision,
        ),
        data=DataInfo(
            source=source,
            split="test",
            fingerprint=fingerprint,
            n_samples=len(records),
            synthetic=source == "synthetic",
        ),
        versions={"transformers": "5.24"},
        created=created,
        metric_specs=list(specs),
        fields=fields if fields is not None else TASK.field_infos(),
    )
    (run / CONFIG_FILE).write_text(config.model_dump_json())
    if status is not None:  # counted as the runner counts them
        failures = Failures.of(records, specs)
        metrics = RunMetrics(
            task=task,
            model=model,
            n=len(records),
            status=status,
            reason=None if status == "complete" else "x",
            n_errors=failures.errors,
            n_parse_failures=failures.not_parsed,
            n_truncated=failures.truncated,
        )
        (run / METRICS_FILE).write_text(metrics.model_dump_json())
    lines = "".join(r.model_dump_json() + "\n" for r in records)
    if torn:
        lines += records[0].model_dump_json()[:40]  # a crash mid-append
    (run / PREDICTIONS_FILE).write_text(lines)
    return run
