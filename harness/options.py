"""The options of a run and of a training, typed once: the CLI, the library API, the runner and the
training all take these objects, and every check of an option lives here.

Each field's description is its CLI help (``help_for``); a bad value fails with one line naming the
option as both the CLI and Python spell it (``batch_size (--batch-size): ...``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.core.errors import HarnessError

Split = Literal["train", "validation", "test"]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def build(cls, base: Self | None = None, /, **values: Any) -> Self:
        """``base`` (or the defaults) with ``values`` on top, checked; HarnessError in one line."""
        merged = {**(base.model_dump(exclude_unset=True) if base else {}), **values}
        try:
            return cls(**merged)
        except ValidationError as err:
            raise HarnessError(_one_line(err)) from None

    @classmethod
    def help_for(cls, name: str) -> str:
        return cls.model_fields[name].description or ""


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    name = ".".join(str(p) for p in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    if not name:  # a rule across options
        return message + more
    return f"{name} (--{name.replace('_', '-')}): {message}, got {first.get('input')!r}{more}"


class EvalOptions(_Options):
    """How to evaluate (``harness run``); what to evaluate (task, model) is given beside it."""

    data: str | None = Field(
        None, description="hub | synthetic | path to CSV/Parquet/JSONL (default: the task's)."
    )
    split: Split = Field("test", description="train | validation | test.")
    prompt: str = Field(
        "default", description="The task's prompt variant: default | instructed | few-shot | choices."
    )
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N samples.")
    batch_size: int = Field(8, ge=1, description="Generation batch size (outputs do not depend on it).")
    output_dir: Path = Field(Path("runs"), description="Where run directories go.")
    fresh: bool = Field(False, description="Start over instead of resuming.")
    max_new_tokens: int | None = Field(
        None,
        ge=1,
        description="Generation budget per sample (default: the task's longest target + 25 % + 8).",
    )
    min_new_tokens: int | None = Field(
        None, ge=1, description="Speed benchmarks: generate at least N tokens (end tokens ignored)."
    )
    max_error_rate: float = Field(
        0.05, ge=0, le=1, description="Above this share of errored samples the run is incomplete (exit 1)."
    )
    max_consecutive_errors: int = Field(
        8,
        ge=1,
        description="Stop after this many generation errors in a row (the model or device is broken).",
    )
    dtype: str | None = Field(
        None, description="float32 | bfloat16 | float16 (default: bf16 on GPU, fp32 on CPU)."
    )
    revision: str | None = Field(None, description="Model revision (hub ids).")
    trust_remote_code: bool = Field(
        False, description="Run the model repository's own code (needs a pinned revision)."
    )
    device: str | None = Field(None, description="cpu | cuda | cuda:N (default: cuda when available).")
    concurrency: int = Field(
        8, ge=1, description="Served models (openai:<model>@<url>): requests kept in flight."
    )
    num_crops: int | None = Field(
        None, ge=1, description="Phi-3-Vision image crops (default: the model's; 16 for 3.0, 4 for 3.5)."
    )
    max_image_tokens: int | None = Field(
        None,
        ge=1,
        description="Cap the tokens one image may become, through the family's own setting (Qwen's "
        "max_pixels, Phi-3's num_crops, InternVL's tiles, SmolVLM's grid); a family with a fixed count "
        "is checked. Part of the run's identity.",
    )
    quiet: bool = Field(False, description="Print nothing (no tables, no progress).")


class TrainOptions(_Options):
    """How to fine-tune (``harness train``); unset hyper-parameters come from the model's recipe."""

    backend: Literal["trl"] = Field("trl", description="Training backend.")
    data: str | None = Field(
        None, description="hub | synthetic | path to CSV/Parquet/JSONL (default: the task's)."
    )
    epochs: float | None = Field(None, gt=0, description="Epochs (default: 1 for real models).")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after N optimizer steps (instead of --epochs)."
    )
    lora_r: int | None = Field(None, ge=1, description="LoRA rank (alpha follows at 2 x r).")
    lr: float | None = Field(None, gt=0, description="Peak learning rate.")
    batch_size: int | None = Field(None, ge=1, description="Per-device batch size.")
    grad_accum: int | None = Field(None, ge=1, description="Gradient accumulation steps.")
    qlora: bool = Field(False, description="4-bit QLoRA (needs a CUDA GPU + bitsandbytes).")
    output_dir: Path | None = Field(None, description="Default: outputs/train/<model>-<time>.")
    resume: bool = Field(False, description="Continue from the newest checkpoint in --output-dir.")
    overwrite: bool = Field(False, description="Replace a finished adapter in --output-dir.")
    report_to: Literal["none", "wandb"] = Field(
        "none", description="none | wandb (offline without an API key)."
    )
    seed: int = Field(0, description="Seed of training (the split is the task's own).")
    limit: int | None = Field(None, ge=1, description="Use only the first N training samples.")
    eval_every: int | None = Field(
        None, ge=0, description="Generate on the validation slice every N steps (0: at the end only)."
    )
    n_eval: int | None = Field(None, ge=1, description="Size of that validation slice.")
    save_steps: int | None = Field(None, ge=1, description="Save a checkpoint every N optimizer steps.")
    device: str | None = Field(None, description="cpu | cuda | cuda:N (default: cuda when available).")
    revision: str | None = Field(None, description="Model revision (hub ids).")
    quiet: bool = Field(False, description="Print nothing but errors.")

    @model_validator(mode="after")
    def _one_of_each_pair(self) -> Self:
        if self.epochs is not None and self.max_steps is not None:
            raise ValueError("give --epochs or --max-steps, not both")
        if self.resume and self.overwrite:
            raise ValueError("give --resume or --overwrite, not both")
        return self
