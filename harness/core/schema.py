"""The typed records every writer and reader of a run directory shares.

A run directory holds three files:

- ``config.json``      -- :class:`RunConfig`, written once when the run starts (atomically).
- ``predictions.jsonl`` -- one :class:`Record` per sample, appended and flushed batch by batch.
- ``metrics.json``     -- :class:`RunMetrics`, written atomically when the run finishes.

This module imports nothing heavy (no torch, no transformers) so that ``reports/`` can read runs
on a machine without them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 3  # 3: metric specs carry a role


FieldValue = str | float
# A sample's ground truth and what the parser read from an answer, keyed by the task's field names
# (a parsed field is None when it was not found). Nothing here knows any catalog's fields.
Truth = dict[str, FieldValue]
Parsed = dict[str, FieldValue | None]


class FieldInfo(BaseModel):
    """One field of a task's answer, as readers of a run need to know it (reports, plots, W&B)."""

    name: str
    kind: str  # the task's field kind (e.g. text, label, number)
    numeric: bool = False  # values are numbers: scatter and error plots
    categorical: bool = False  # values are labels: per-label tables and accuracy bars
    unit: str | None = None  # e.g. a currency


class Sample(BaseModel):
    """One evaluation item as a task hands it to the runner.

    The image stays a path: it is opened by whoever needs the pixels, so one unreadable file
    becomes that sample's error instead of the whole run's.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    image: str  # local path
    truth: Truth
    group: str = ""  # samples sharing a group (normalised title) always land in the same split


class Record(BaseModel):
    """One line of predictions.jsonl. When an id appears twice (an errored sample retried on resume),
    the later line is the sample's record."""

    id: str
    image: str
    prompt: str
    output: str | None = None  # raw generated text; None when the sample errored
    parsed: Parsed = Field(default_factory=dict)
    truth: Truth
    scores: dict[str, float | None] = Field(default_factory=dict)
    latency_s: float | None = None
    error: str | None = None
    n_tokens: int | None = None  # generated tokens, the end token included
    prompt_tokens: int | None = None  # as a server reports its usage
    stop: Literal["end", "length"] | None = None  # "length": cut at max_new_tokens (truncated)
    batch_size: int | None = None  # size of the generate call that produced it


# What a metric measures, which is what reports choose it by (never by its name):
# accuracy: 0/1 right or wrong; similarity: closeness, higher is better; error / relative_error:
# distance from the truth (relative: a share of it), lower is better; read_rate: a field was read;
# parse_rate: every field was read.
Role = Literal["accuracy", "similarity", "error", "relative_error", "read_rate", "parse_rate"]


class MetricSpec(BaseModel):
    """What a metric means, read by every writer and reader (reports never hard-code a metric)."""

    name: str
    label: str
    role: Role
    higher_is_better: bool = True
    binary: bool = False  # 0/1 per sample: McNemar in comparisons; otherwise Wilcoxon
    fill_missing: bool = True  # a missing value counts as 0 (a failure); else only defined pairs count
    percent: bool = False  # shown x100 with "%"
    per_group: bool = False  # shown in the per-label tables (one per label field)
    unit: str | None = None
    field: str | None = None  # the answer field it scores; None for whole-answer metrics
    primary: bool = False  # the task's headline metric: what a leaderboard ranks by unless told

    @model_validator(mode="before")
    @classmethod
    def _role_of_a_version_2_run(cls, data: Any) -> Any:
        """Runs written before roles (schema 2) named their metrics by a fixed scheme: read it once here."""
        if isinstance(data, dict) and "role" not in data and "name" in data:
            name = data["name"]
            suffixes = {"_similarity": "similarity", "_ape": "relative_error", "_abs_error": "error",
                        "_log_error": "error", "_read": "read_rate"}  # fmt: skip
            role = next((r for end, r in suffixes.items() if name.endswith(end)), "accuracy")
            data = {**data, "role": "parse_rate" if name == "parsed" else role}
        return data


def spec_with_role(specs: Iterable[MetricSpec], role: Role, field: str | None = None) -> MetricSpec | None:
    """The first spec of ``role`` (for ``field`` when given): how readers find a metric."""
    return next((s for s in specs if s.role == role and (field is None or s.field == field)), None)


class MetricValue(BaseModel):
    """An aggregate with its 95 % bootstrap confidence interval."""

    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int = 0


class Excluded(BaseModel):
    """A row that never became a sample (e.g. its image could not be downloaded)."""

    id: str
    reason: str


class DataInfo(BaseModel):
    source: str  # "hub", "synthetic" or a file path
    split: str
    fingerprint: str  # hash of the split's sample ids + truths + image bytes digests
    n_samples: int
    n_excluded: int = 0
    n_filtered: int = 0  # rows the task's filters leave out by design (e.g. an empty label)
    synthetic: bool = False
    revision: str | None = None  # a hub dataset's commit sha
    split_seed: int = 0  # the task's fixed split seed: never a training or sampling seed
    group_by: str = ""  # what a sample's group is (its rows never straddle splits)
    manifest: str | None = None  # path of the data manifest (with the excluded rows)
    budget_targets: list[str] = Field(default_factory=list)  # longest targets of the catalog (all splits)
    train_labels: dict[str, list[str]] = Field(
        default_factory=dict
    )  # label field -> train labels, commonest first
    units: dict[str, str] = Field(default_factory=dict)  # field -> unit (e.g. a currency)


class ModelInfo(BaseModel):
    name: str  # what the user typed, e.g. "base", "tiny-tuned"
    path: str  # hub id or local directory actually loaded
    revision: str | None = None  # for a hub id, the commit sha it resolved to when the run started
    adapter: str | None = None  # LoRA adapter directory evaluated (unmerged) on top of `path`
    family: str = "hf"  # a registered model family (backends/families): "hf" is any Auto-class model
    endpoint: str | None = None  # a served model's OpenAI-compatible base URL (path = its served name)
    trust_remote_code: bool = False
    num_crops: int | None = None  # Phi-3-Vision image crops (16 for 3.0, 4 for 3.5); None = model default
    max_image_tokens: int | None = None  # --max-image-tokens: the family's image setting lowered to fit
    attn_implementation: str = "sdpa"
    content: str | None = None  # content hash of a local model directory (weights, config, tokenizer)
    adapter_content: str | None = None  # content hash of the adapter directory


class GenerationInfo(BaseModel):
    max_new_tokens: int | Literal["auto"] = "auto"  # as asked; "auto" = sized from the task's targets
    resolved_max_new_tokens: int | None = None  # what the run used (not part of the identity)
    min_new_tokens: int | None = None  # benchmarks only: generate at least this many (end tokens ignored)
    do_sample: bool = False


class RunConfig(BaseModel):
    schema_version: int = SCHEMA_VERSION
    task: str
    model: ModelInfo
    data: DataInfo
    generation: GenerationInfo = Field(default_factory=GenerationInfo)
    prompt: str = ""  # identity of what the task asks and how it renders the question (a hash)
    prompt_name: str = "default"  # the task's prompt variant: default | instructed | few-shot | choices
    task_source: str = ""  # where the task's definition came from (built-in, a file, dbq:...)
    fields: list[FieldInfo] = Field(default_factory=list)
    limit: int | None = None
    # Not in the identity: fp32 outputs do not depend on it, but bf16 greedy answers on a GPU can
    # (padding changes reduction order; BENCHMARKS.md measures it), so each record keeps its own.
    batch_size: int = 8
    device: str = "cpu"  # device kind ("cpu", "cuda"): part of the identity, like dtype
    dtype: str = "float32"
    max_error_rate: float = 0.05  # above it the run is "incomplete"
    metric_specs: list[MetricSpec] = Field(default_factory=list)
    versions: dict[str, str] = Field(default_factory=dict)
    git_sha: str | None = None
    created: str = ""
    key: str = ""  # hash naming the run directory


class RunMetrics(BaseModel):
    schema_version: int = SCHEMA_VERSION
    task: str
    model: str
    status: Literal["complete", "incomplete"] = "complete"
    reason: str | None = None  # why the run is incomplete
    n: int  # records scored (errors included)
    n_errors: int = 0
    n_parse_failures: int = 0  # answered (no error) but not every field read: 1 - parse rate, as a count
    n_truncated: int = 0  # answers cut at max_new_tokens
    n_excluded: int = 0  # rows dropped before the run (see the data manifest)
    batch_size: int | None = None  # the generation batch size that ran last (halved after out-of-memory)
    peak_memory_gb: float | None = None  # on a GPU: the most memory the generation allocated
    scoring: str = ""  # identity of the parser and scorers that made these numbers
    metrics: dict[str, MetricValue] = Field(default_factory=dict)
    metric_specs: list[MetricSpec] = Field(default_factory=list)
    per_group: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)  # field -> label -> means
    wall_s: float | None = None  # the last session's wall time (a resumed run: the resuming one's)
    timed: int | None = None  # samples generated in that session: timed / wall_s is the run's speed


class TrainManifest(BaseModel):
    """``harness-train.json``: written beside a trained adapter so ``<name>-tuned`` resolves to it."""

    schema_version: int = SCHEMA_VERSION
    base_model: str  # canonical name of the base, e.g. "tiny-phi3v" or "phi-3-vision"
    base_path: str  # hub id or local directory the adapter was trained on
    revision: str | None = None
    family: str = "hf"
    task: str
    data: DataInfo  # the train split
    validation: DataInfo | None = None
    # What the adapter saw, so an evaluation can prove it never tests on them.
    train_ids: list[str] = Field(default_factory=list)
    train_groups: list[str] = Field(default_factory=list)
    validation_ids: list[str] = Field(default_factory=list)
    validation_groups: list[str] = Field(default_factory=list)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)  # final callback metrics
    steps: int = 0
    created: str = ""


CONFIG_FILE = "config.json"
PREDICTIONS_FILE = "predictions.jsonl"
METRICS_FILE = "metrics.json"
TRAIN_MANIFEST_FILE = "harness-train.json"
