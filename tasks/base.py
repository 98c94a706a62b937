"""The Task protocol: what is asked of a model and how its answer is judged.

A task is text, images and numbers: nothing under ``tasks/`` imports torch or transformers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from harness.core import schema


@dataclass
class TaskData:
    """One split of a task's data, ready to run: the samples plus what was left out and why."""

    samples: list[schema.Sample]
    info: schema.DataInfo
    excluded: list[schema.Excluded] = field(default_factory=list)


class Task(Protocol):
    """What every task offers the spine. Catalog tasks (tasks/catalog.py, from a TOML config) are one
    implementation; a task that is not a catalog implements this directly."""

    name: str
    description: str
    split_seed: int  # fixed by the task: the split never depends on a training or sampling seed
    prompt: str  # the prompt variant asked with (part of a run's identity)

    def load(
        self, source: str, split: str, *, limit: int | None = None, cache_dir: Path | None = None
    ) -> TaskData:
        """Load ``split`` ("train", "validation" or "test") from ``source`` ("hub", "synthetic" or a path)."""

    def messages(self, sample: schema.Sample | None = None) -> list[dict]:
        """The conversation in the Hugging Face chat format, ending with the user turn to answer; every
        image part carries its file as "path" (the sample's own image when absent)."""

    def target(self, sample: schema.Sample) -> str:
        """The answer a perfect model would generate (the training target)."""

    def prompt_identity(self) -> str:
        """A hash of what is asked and of the answer template: part of every run's identity."""

    def scoring_identity(self) -> str:
        """A hash of the parser and scorers: a finished run scored by other code is re-scored."""

    def metric_specs(self) -> list[schema.MetricSpec]:
        """What each per-sample score means (label, direction, binary or not, per-label or not)."""

    def field_infos(self) -> list[schema.FieldInfo]:
        """The answer's fields (name, kind, unit): how reports show truths and parsed values."""

    def parse(self, text: str) -> schema.Parsed:
        """Read the fields from a model's answer. Never raises."""

    def score(self, truths: list[schema.Truth], parsed: list[schema.Parsed]) -> list[dict[str, float | None]]:
        """Per-sample scores of a batch; None where a score is undefined (e.g. no price parsed)."""

    def aggregate(
        self, records: list[schema.Record]
    ) -> tuple[dict[str, schema.MetricValue], dict[str, dict]]:
        """Aggregates with 95 % bootstrap CIs, and per-label means ({label field: {label: {metric: mean}}})."""
