"""Reading a run directory: what reports, comparisons and the library API see of a run.

Never modifies the directory. The runner's own writer lives in harness.core.store; both read
predictions through the same :func:`harness.core.store.read_all_records`.
"""

from __future__ import annotations

import os
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
)
from harness.core.store import _read_config, _read_metrics, latest, rank_files, read_all_records


def load_run(directory: Path) -> tuple[RunConfig, list[Record], RunMetrics | None]:
    """Read a run directory (for reports): never modifies it; metrics is None for an unfinished run."""
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise HarnessError(f"{directory}: not a run directory (no {CONFIG_FILE})")
    config = _read_config(config_path)
    metrics_path = directory / METRICS_FILE
    metrics = _read_metrics(metrics_path) if metrics_path.exists() else None
    return config, read_all_records(directory), metrics


@dataclass
class Run:
    """One run directory as read from disk."""

    path: Path
    config: RunConfig
    records: list[Record]
    metrics: RunMetrics | None = None
    torn_last_line: bool = False
    duplicates: int = 0

    @property
    def ids(self) -> set[str]:
        return {r.id for r in self.records}

    @property
    def label(self) -> str:
        return self.config.model.name

    @property
    def specs(self) -> dict[str, MetricSpec]:
        """The run's metric specs (from config.json, or metrics.json for a run written before them)."""
        specs = self.config.metric_specs or (self.metrics.metric_specs if self.metrics else [])
        return {s.name: s for s in specs}

    @property
    def fields(self) -> list[FieldInfo]:
        return self.config.fields

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
    return Run(
        path, config, list(by_id.values()), metrics, _ends_mid_line(pred_file), len(records) - len(by_id)
    )


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
