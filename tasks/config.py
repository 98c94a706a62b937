"""A catalog task is a config file: TOML read with tomllib, validated by these pydantic models.

A new catalog is one file and no code::

    name = "shop"
    question = "What is shown in this image?"
    answer = "Title: {title}, Type: {type}, Colour: {colour}, Price: {price}"

    [data]
    file = "catalog.csv"          # or hub = "org/dataset" (+ revision), relative to this file
    id_column = "sku"
    image_column = "image"        # a local path; or url_column = "image_url"
    group_by = "title"            # rows sharing it never straddle train and test

    [[fields]]
    name = "title"
    column = "title"
    kind = "text"                 # text | label | number | price (tasks/kinds.py)
    labels = ["Title", "Product"] # what a model may write before the colon

Every problem is reported as one line naming the file and the setting (:func:`problems`), all of
them at once, so a user fixes a config in one go.
"""

from __future__ import annotations

import re
import string
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from harness.core.errors import HarnessError
from tasks.kinds import KINDS, answer_parser, metric_specs

PROMPTS = ("default", "instructed", "few-shot", "choices")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FilterConfig(_Strict):
    """Rows whose ``column`` is empty or one of ``exclude`` are out of the task (counted, not errors)."""

    column: str
    exclude: list[str] = Field(default_factory=list)


class DataConfig(_Strict):
    hub: str | None = None  # a Hugging Face dataset id
    revision: str | None = None  # its commit sha; None: resolved when loaded, and recorded
    file: str | None = None  # a CSV / Parquet / JSONL table, relative to the config file
    synthetic: bool = True  # `--data synthetic` (the built-in catalog) is allowed for this task
    id_column: str | None = None  # None: the row number
    image_column: str | None = "image"  # a local path (relative to the table)
    url_column: str | None = None  # an http(s) URL, downloaded and cached
    group_by: list[str] = Field(default_factory=list)  # default: the first text field's column
    split_seed: int = 0
    filters: list[FilterConfig] = Field(default_factory=list)

    @field_validator("group_by", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, str) else value


class FieldConfig(_Strict):
    name: str
    column: str
    kind: str  # a registered field kind (tasks/kinds.py): text | label | number | price
    labels: list[str] = Field(min_length=1)
    scorers: list[str] | None = None  # default: every scorer of the kind
    tolerances: list[float] = Field(default_factory=lambda: [10.0, 25.0])  # "within x %" (number, price)
    currency: str | None = None  # a price's fixed currency, e.g. "USD"
    currency_column: str | None = None  # or the column holding it (recorded per sample)


class PromptConfig(_Strict):
    question: str | None = None  # default: the task's question (+ the answer format for "instructed")
    shots: int = Field(default=2, ge=1, le=8)  # few-shot: solved train examples shown first
    choices: int = Field(default=60, ge=2, le=1000)  # choices: at most this many labels listed per field


class TaskConfig(_Strict):
    name: str
    description: str = ""
    question: str
    answer: str  # the training target, with {field} placeholders
    data: DataConfig
    fields: list[FieldConfig] = Field(min_length=1)
    prompts: dict[str, PromptConfig] = Field(default_factory=dict)
    primary: str | None = None  # the headline metric (a leaderboard ranks by it); default: a label's accuracy

    @property
    def group_columns(self) -> list[str]:
        if self.data.group_by:
            return self.data.group_by
        text = [f.column for f in self.fields if f.kind == "text"]  # the free-text field: a product's name
        return text[:1] or [self.fields[0].column]


def placeholders(template: str) -> list[str]:
    """The {names} an answer template uses, in order."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def problems(config: TaskConfig) -> list[str]:
    """What is wrong with a config that pydantic's types cannot see, one line per problem."""
    out = []
    names = [f.name for f in config.fields]
    for i, f in enumerate(config.fields):
        where = f"fields[{i}] ({f.name})"
        if not _NAME.match(f.name):
            out.append(f"{where}: name must be an identifier (letters, digits, _), got {f.name!r}")
        if names.count(f.name) > 1:
            out.append(f"{where}: duplicate field name {f.name!r}")
        kind = KINDS.get(f.kind)
        if kind is None:
            out.append(f"{where}: unknown kind {f.kind!r}; valid kinds: {', '.join(KINDS)}")
            continue
        for scorer in f.scorers or ():
            if scorer not in kind.scorers:
                out.append(
                    f"{where}: unknown scorer {scorer!r} for kind {f.kind!r}; valid: {', '.join(kind.scorers)}"
                )
        if (f.currency or f.currency_column) and not kind.currency:
            out.append(
                f"{where}: currency is only for kinds {', '.join(k.name for k in KINDS.values() if k.currency)}"
            )
        if any(t <= 0 for t in f.tolerances):
            out.append(f"{where}: tolerances must be positive percentages, got {f.tolerances}")
    try:
        used = placeholders(config.answer)
    except ValueError as err:
        out.append(f"answer: not a valid template ({err})")
        used = names
    for name in used:
        if name not in names:
            out.append(
                f"answer: the template names {{{name}}}, which is not a field (fields: {', '.join(names)})"
            )
    for name in names:
        if name not in used:
            out.append(
                f"answer: field {name!r} is not in the template, so a model can neither learn nor be read for it"
            )
    for key in config.prompts:
        if key not in PROMPTS:
            out.append(f"prompts.{key}: unknown prompt; valid: {', '.join(PROMPTS)}")
    sources = [config.data.hub, config.data.file]
    if not any(sources) and not config.data.synthetic:
        out.append("data: give hub, file or synthetic = true")
    if not config.data.image_column and not config.data.url_column:
        out.append("data: give image_column (a local path) or url_column")
    if not out:
        try:
            answer_parser(config.fields)
        except ValueError as err:
            out.append(f"fields: {err}")
    if not out and config.primary is not None:
        names = [s.name for s in metric_specs(config.fields)]
        if config.primary not in names:
            out.append(f"primary: {config.primary!r} is not one of the task's metrics ({', '.join(names)})")
    return out


def parse_config(data: dict, where: str) -> TaskConfig:
    """A validated TaskConfig from TOML data; HarnessError listing every problem, one per line."""
    try:
        config = TaskConfig.model_validate(data)
    except ValidationError as err:
        lines = [f"{where}: {_location(e['loc'])}: {e['msg']}" for e in err.errors()]
        raise TaskConfigError(lines) from err
    found = problems(config)
    if found:
        raise TaskConfigError([f"{where}: {p}" for p in found])
    return config


def load_config(path: Path) -> TaskConfig:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise HarnessError(f"{path}: no such task file") from err
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise HarnessError(f"{path}: not valid TOML: {err}") from err
    return parse_config(data, str(path))


class TaskConfigError(HarnessError):
    """Every problem of a task config; str() is the first, ``lines`` all of them."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        more = f" (and {len(lines) - 1} more problems: `harness task check`)" if len(lines) > 1 else ""
        super().__init__(lines[0] + more)


def _location(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"
