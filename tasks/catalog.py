"""CatalogTask: one config-driven task for every product catalog (``burberry`` is a config file).

From a TaskConfig it builds the prompt (default, instructed, few-shot or choices), the training target, the
answer parser (tasks/parsing.py), the scorers per field kind (tasks/scorers.py), the metric specs,
and its data (tasks/data.py: hub at a pinned commit, a local table or the synthetic catalog, with
a grouped split on the task's own fixed seed).

Why one class: a new catalog is one TOML file and no code, and every catalog keeps every guarantee.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.schema import (
    FieldInfo,
    MetricSpec,
    MetricValue,
    Parsed,
    Record,
    Sample,
    Truth,
)
from harness.core.stats import mean_ci
from tasks.base import TaskData
from tasks.config import PROMPTS, FieldConfig, PromptConfig, TaskConfig, placeholders
from tasks.data import CatalogData
from tasks.kinds import answer_parser, get_kind, metric_specs

# The code that turns an answer into numbers: a change re-scores finished runs (scoring identity).
SCORING_SOURCES = [
    Path(__file__),
    *(Path(__file__).with_name(n) for n in ("parsing.py", "text.py", "scorers.py", "kinds.py")),
]


def _identity(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def score_values(records: list[Record], spec: MetricSpec) -> list[float | None]:
    """One value per record: a missing score is a failure (0) or undefined (None), as the spec says."""
    values = [r.scores.get(spec.name) for r in records]
    return [0.0 if v is None and spec.fill_missing else v for v in values]


class CatalogTask:
    """A product catalog task from a TaskConfig; ``prompt`` picks default, instructed, few-shot or choices."""

    def __init__(
        self,
        config: TaskConfig,
        *,
        source: str = "built-in",
        base_dir: Path | None = None,
        prompt: str = "default",
        synthetic_size: int = 600,
    ) -> None:
        if prompt not in PROMPTS:
            raise HarnessError(f"unknown prompt {prompt!r}; valid prompts: {', '.join(PROMPTS)}")
        self.config = config
        self.name = config.name
        self.description = config.description
        self.source = source  # where the definition came from: shown by `harness tasks`, kept in runs
        self.base_dir = Path(base_dir) if base_dir else None
        self.prompt = prompt
        self.fields = list(config.fields)
        self._parser = answer_parser(self.fields)
        self._specs = metric_specs(self.fields, config.primary)
        self._shots: list[Sample] | None = None
        self._labels: dict[str, list[str]] | None = None  # label field -> the train split's labels
        self.data = CatalogData(
            config, base_dir=self.base_dir, synthetic_size=synthetic_size, render=self._render
        )

    @property
    def synthetic_size(self) -> int:
        return self.data.synthetic_size

    @synthetic_size.setter
    def synthetic_size(self, size: int) -> None:
        self.data.synthetic_size = size

    @property
    def split_seed(self) -> int:
        return self.config.data.split_seed

    # -- identity

    def prompt_identity(self) -> str:
        """What the model is asked and trained to answer (and, few-shot, which examples it is shown)."""
        shots = [[s.id, self.target(s)] for s in self._shots or []]
        return _identity(self.prompt, self.question(), self.config.answer, shots)

    def scoring_identity(self) -> str:
        """The parser, the scorers, the field settings and the label sets answers are mapped onto: a
        finished run scored by others is re-scored."""
        code = [hashlib.sha256(p.read_bytes()).hexdigest() for p in SCORING_SOURCES]
        fields = [f.model_dump(exclude={"column"}) for f in self.fields]
        return _identity(code, fields, self._labels)

    def metric_specs(self) -> list[MetricSpec]:
        return list(self._specs)

    def field_infos(self) -> list[FieldInfo]:
        return [
            FieldInfo(
                name=f.name,
                kind=f.kind,
                numeric=get_kind(f.kind).numeric,
                categorical=get_kind(f.kind).categorical,
                unit=f.currency,
            )
            for f in self.fields
        ]

    # -- prompt / target

    def question(self) -> str:
        """The question the prompt variant asks: as configured; "instructed" adds the answer format;
        "choices" also lists each label field's train labels (commonest first, capped), so that a
        model that never saw the catalog can name its labels."""
        custom = self.config.prompts.get(self.prompt)
        if custom and custom.question:
            return custom.question
        if self.prompt == "instructed":
            return f"{self.config.question} Answer in exactly this format: {self.answer_format()}"
        if self.prompt == "choices":
            cap = custom.choices if custom else PromptConfig().choices
            lists = [
                f" {f.labels[0]} is one of: "
                + (
                    "; ".join(self._labels[f.name][:cap])
                    if self._labels is not None
                    else "<the train split's labels>"
                )
                + "."
                for f in self.fields
                if get_kind(f.kind).categorical
            ]
            return f"{self.config.question} Answer in exactly this format: {self.answer_format()}." + "".join(
                lists
            )
        return self.config.question

    def answer_format(self) -> str:
        """The answer template with <field> in place of each value: what the instructed prompt spells out."""
        return self.config.answer.format(**{n: f"<{n}>" for n in placeholders(self.config.answer)})

    def messages(self, sample: Sample | None = None) -> list[dict]:
        """The conversation in the Hugging Face chat format; image parts carry their file as "path".

        Few-shot: each shot is a user turn (its image and the question) answered by its target.
        """
        if self.prompt == "choices" and self._labels is None:
            raise HarnessError(
                f"task {self.name!r}: the choices prompt lists the train labels: load the data first"
            )
        question = self.question()
        turns = []
        for shot in self._shots or []:
            turns.append({"role": "user", "content": [{"type": "image", "path": shot.image}, {"type": "text", "text": question}]})  # fmt: skip
            turns.append({"role": "assistant", "content": [{"type": "text", "text": self.target(shot)}]})
        image = {"type": "image", "path": sample.image} if sample is not None else {"type": "image"}
        turns.append({"role": "user", "content": [image, {"type": "text", "text": question}]})
        return turns

    def target(self, sample: Sample) -> str:
        return self._render(sample.truth)

    def _render(self, truth: Truth) -> str:
        values = {
            f.name: float(truth[f.name]) if get_kind(f.kind).numeric else truth[f.name] for f in self.fields
        }
        return self.config.answer.format(**values)

    # -- parse / score / aggregate

    def parse(self, text: str) -> Parsed:
        return self._parser(text)

    def score(self, truths: list[Truth], parsed: list[Parsed]) -> list[dict[str, float | None]]:
        """Per-sample scores of a whole batch, field by field (tasks/scorers.py)."""
        if not truths:
            return []
        columns: dict[str, list] = {}
        for f in self.fields:
            preds = [p.get(f.name) for p in parsed]
            labels = self._labels.get(f.name) if self._labels is not None else None
            columns.update(get_kind(f.kind).score(f, preds, [t[f.name] for t in truths], labels))
            columns[f"{f.name}_read"] = [float(p is not None) for p in preds]
        # One parse rate (every field read) and a read rate per field: each named as what it counts.
        columns["parsed"] = [float(all(p.get(f.name) is not None for f in self.fields)) for p in parsed]
        return [{spec.name: columns[spec.name][i] for spec in self._specs} for i in range(len(truths))]

    def aggregate(self, records: list[Record]) -> tuple[dict[str, MetricValue], dict[str, dict]]:
        """Means with 95 % bootstrap CIs (harness.core.stats, the reports' own), and per-label means for
        every label field."""
        columns = [score_values(records, spec) for spec in self._specs]
        metrics = {
            spec.name: MetricValue(value=mean, ci_low=low, ci_high=high, n=n)
            for spec, (mean, low, high, n) in zip(self._specs, mean_ci(columns), strict=True)
        }
        grouped = [spec for spec in self._specs if spec.per_group]
        per_group: dict[str, dict] = {}
        for f in (f for f in self.fields if get_kind(f.kind).categorical):
            table = per_group[f.name] = {}
            for label in sorted({str(r.truth[f.name]) for r in records}):
                rows = [r for r in records if str(r.truth[f.name]) == label]
                table[label] = {"n": len(rows)}
                for spec in grouped:
                    defined = [v for v in score_values(rows, spec) if v is not None]
                    table[label][spec.name] = sum(defined) / len(defined) if defined else None
        return metrics, per_group

    # -- data

    def default_source(self) -> str:
        return self.data.default_source()

    def load(self, source: str | None = None, split: str = "test", **options) -> TaskData:
        """``split`` of ``source`` (tasks.data.CatalogData.load: limit, cache_dir); the train split's
        label sets and, few-shot, the examples are taken from the same data."""
        data = self.data.load(source, split, **options)
        self._labels = data.info.train_labels
        return self._with_shots(data, source, options.get("cache_dir"))

    def preview(self, source: str | None = None, n: int = 3) -> list[tuple[int, Truth | str]]:
        """The first ``n`` rows the task keeps (for `harness task check`)."""
        return self.data.preview(source, n)

    def _with_shots(self, data: TaskData, source: str, cache_dir: Path | None) -> TaskData:
        """Few-shot: pick the solved examples (train split of the same data) before the first prompt."""
        if self.prompt == "few-shot" and self._shots is None:
            shots = self.config.prompts.get("few-shot")
            k = shots.shots if shots else 2
            train = data if data.info.split == "train" else self.load(source, "train", cache_dir=cache_dir)
            self._shots = pick_shots(train.samples, self.fields, k)
        return data


def pick_shots(train: list[Sample], fields: list[FieldConfig], k: int) -> list[Sample]:
    """k solved examples, deterministic: by id, preferring distinct values of the first label field."""
    label = next((f.name for f in fields if get_kind(f.kind).categorical), None)
    chosen, seen = [], set()
    for sample in sorted(train, key=lambda s: hashlib.sha256(s.id.encode()).hexdigest()):
        key = sample.truth.get(label) if label else sample.id
        if key not in seen:
            chosen.append(sample)
            seen.add(key)
        if len(chosen) == k:
            return chosen
    rest = [s for s in sorted(train, key=lambda s: s.id) if s not in chosen]
    return (chosen + rest)[:k]
