"""Reading a run directory: what reports, comparisons and the library API see of a run.

Never modifies the directory. The runner's own writer lives in harness.core.store; both read
predictions through the same :func:`harness.core.store.read_all_records`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.schema import (
    CONFIG_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    FieldInfo,
    MetricSpec,
    Record,
    RunConfig,
    RunMetrics,
    spec_with_role,
)
from harness.core.store import latest, rank_files, read_all_records, read_config, read_metrics


def is_run_dir(path: str | Path) -> bool:
    """A run directory holds config.json and its predictions (one file, or one per process of an
    unfinished data-parallel run): a model's own config.json does not make one."""
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and ((path / PREDICTIONS_FILE).is_file() or bool(rank_files(path)))


def run_dirs(root: str | Path) -> list[Path]:
    """Every run directory under ``root``, in path order."""
    return sorted(p.parent for p in Path(root).rglob(CONFIG_FILE) if is_run_dir(p.parent))


def load_run(directory: Path) -> tuple[RunConfig, list[Record], RunMetrics | None]:
    """Read a run directory (for reports): never modifies it; metrics is None for an unfinished run."""
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise HarnessError(f"{directory}: not a run directory (no {CONFIG_FILE})")
    config = read_config(config_path)
    metrics_path = directory / METRICS_FILE
    metrics = read_metrics(metrics_path) if metrics_path.exists() else None
    return config, read_all_records(directory), metrics


@dataclass(frozen=True)
class Failures:
    """How many samples failed and how: the counts behind the rates, one definition for every reader."""

    errors: int  # errored (unreadable image, failed generation): scored as wrong
    not_parsed: int  # answered, but not every field read
    truncated: int  # cut at max_new_tokens

    @classmethod
    def of(cls, records: list[Record], specs: Iterable[MetricSpec]) -> Failures:
        parse_rate = spec_with_role(specs, "parse_rate")
        return cls(
            errors=sum(r.error is not None for r in records),
            not_parsed=sum(r.error is None and not_parsed(r, parse_rate) for r in records),
            truncated=sum(r.stop == "length" for r in records),
        )


def not_parsed(record: Record, parse_rate: MetricSpec | None) -> bool:
    """The record's answer did not have every field read (an error counts: nothing was read)."""
    return record.error is not None or (parse_rate is not None and record.scores.get(parse_rate.name) == 0)


@dataclass
class Run:
    """One run directory as read from disk."""

    path: Path
    config: RunConfig
    records: list[Record]
    metrics: RunMetrics | None = None
    torn_last_line: bool = False

    @property
    def ids(self) -> set[str]:
        return {r.id for r in self.records}

    @property
    def label(self) -> str:
        return self.config.model.name

    @property
    def specs(self) -> dict[str, MetricSpec]:
        """The run's metric specs: metrics.json's when it has them (they describe the numbers it holds,
        also after a re-scoring added a metric), else config.json's (an unfinished run)."""
        specs = (self.metrics.metric_specs if self.metrics else []) or self.config.metric_specs
        return {s.name: s for s in specs}

    @property
    def fields(self) -> list[FieldInfo]:
        return self.config.fields

    @property
    def failures(self) -> Failures:
        """As metrics.json counted them; counted from the records for an unfinished run."""
        if self.metrics is not None:
            m = self.metrics
            return Failures(m.n_errors, m.n_parse_failures, m.n_truncated)
        return Failures.of(self.records, self.specs.values())

    @property
    def complete(self) -> bool:
        return self.metrics is not None and self.metrics.status == "complete"


def read_run(path: str | Path) -> Run:
    """A run directory through the run store's own reader (the one the runner resumes with).

    A torn last line of predictions.jsonl (a crash mid-append) is dropped and flagged; a bad line
    elsewhere is corruption and raises. When a sample id repeats (an errored sample retried on
    resume), its last record counts, as in the run's metrics.json.
    """
    path = Path(path)
    config, records, metrics = load_run(path)
    pred_file = path / PREDICTIONS_FILE
    if not pred_file.is_file() and not rank_files(path):
        raise HarnessError(f"{pred_file}: missing (the run wrote no predictions)")
    by_id = latest(records)
    return Run(path, config, list(by_id.values()), metrics, _ends_mid_line(pred_file))


def why_incomplete(run: Run) -> str | None:
    """Why a run's numbers are not final, or None when it finished complete."""
    if run.metrics is None:
        return "unfinished (no metrics.json): re-run it to complete"
    if run.metrics.status != "complete":
        return f"incomplete: {run.metrics.reason}"
    return None


def _ends_mid_line(file: Path) -> bool:
    """The writer died mid-append: the file does not end with a newline."""
    if not file.is_file():
        return False
    with open(file, "rb") as f:
        if f.seek(0, os.SEEK_END) == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"
