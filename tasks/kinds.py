"""Field kinds: what a kind of answer field means, declared once.

A kind says how a value is read from a catalog cell, how it is written into the training target,
which parse rule reads it back from an answer (tasks/parsing.py), which scores it gets
(tasks/scorers.py), and what each score means: a MetricSpec whose ``role`` (accuracy, similarity,
error, relative error) is what reports and plots choose by. The built-ins are text, label, number
and price; a new kind is one ``register(FieldKind(...))`` and no other change.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.core.schema import FieldValue, MetricSpec
from tasks import scorers
from tasks.parsing import RULES, AnswerParser, ParseField

if TYPE_CHECKING:
    from tasks.config import FieldConfig

# {metric name: one score per sample} of one field over a batch of (predicted, true) values.
Scores = dict[str, list[float | None]]


@dataclass(frozen=True)
class FieldKind:
    """One kind of answer field, with everything it means.

    ``metrics(field)`` lists the field's MetricSpecs (names ``<field>_<scorer>``) and ``score(field,
    predictions, truths, labels)`` computes exactly those (``labels``: the field's known label set,
    from the train split, or None); both honour the scorers the field chose.
    """

    name: str
    parse: str  # its parse rule (tasks.parsing.RULES): "text", "number" or "price"
    scorers: tuple[str, ...]  # what a field of this kind may choose in `scorers = [...]`
    metrics: Callable[[FieldConfig], list[MetricSpec]]
    score: Callable[[FieldConfig, list, list, list[str] | None], Scores]
    categorical: bool = False  # a closed vocabulary: per-label tables and accuracy bars
    positive: bool = False  # values must be > 0 (a price of 0 is a data error)
    currency: bool = False  # may carry a currency (currency = "USD" or currency_column)

    @property
    def numeric(self) -> bool:
        return self.parse in ("number", "price")

    def value(self, raw: object) -> FieldValue | None:
        """A catalog cell (None when missing) as this kind's value; None when it holds none."""
        if raw is None:
            return None
        if not self.numeric:
            return str(raw).strip() or None
        try:
            number = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
        return number if math.isfinite(number) and (number > 0 or not self.positive) else None

    def expects(self) -> str:
        """What a valid cell is, for the one-line error naming a bad row."""
        if not self.numeric:
            return "a non-empty text"
        return "a positive number" if self.positive else "a finite number"

    def chosen(self, field: FieldConfig) -> tuple[str, ...]:
        return tuple(field.scorers or self.scorers)


KINDS: dict[str, FieldKind] = {}


def register(kind: FieldKind) -> FieldKind:
    """Make ``kind`` available to task configs (``kind = "<name>"``)."""
    if kind.parse not in RULES:
        raise ValueError(f"kind {kind.name!r}: unknown parse rule {kind.parse!r}")
    KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> FieldKind:
    """A registered kind (a task config's kinds are checked when it loads: tasks.config.problems)."""
    return KINDS[name]


def metric_specs(fields: list[FieldConfig], primary: str | None = None) -> list[MetricSpec]:
    """What each score of a task means: each field's kind declares its own (``<field>_<scorer>``),
    then the parse rate (every field read) and a read rate per field. ``primary`` names the headline
    metric (default: the first label field's accuracy, else the first accuracy)."""
    specs = [spec for f in fields for spec in get_kind(f.kind).metrics(f)]
    specs.append(MetricSpec(name="parsed", label="parse rate (all fields read)", role="parse_rate", binary=True, percent=True, per_group=True))  # fmt: skip
    specs += [MetricSpec(name=f"{f.name}_read", label=f"{f.name} read", role="read_rate", binary=True, percent=True, field=f.name) for f in fields]  # fmt: skip
    labels = [f.name for f in fields if get_kind(f.kind).categorical]
    default = next((s.name for s in specs if s.role == "accuracy" and s.field in labels), None)
    default = default or next((s.name for s in specs if s.role == "accuracy"), specs[0].name)
    return [s.model_copy(update={"primary": s.name == (primary or default)}) for s in specs]


def answer_parser(fields: list[FieldConfig]) -> AnswerParser:
    """The parser of a task's fields: each read by its kind's parse rule."""
    return AnswerParser([ParseField(f.name, get_kind(f.kind).parse, tuple(f.labels)) for f in fields])


def _spec(field: FieldConfig, scorer: str, label: str, role: str, **more) -> MetricSpec:
    binary, error = role == "accuracy", role in ("error", "relative_error")
    defaults = {"binary": binary, "percent": binary or role == "relative_error", "higher_is_better": not error,
                "fill_missing": not error}  # fmt: skip
    return MetricSpec(name=f"{field.name}_{scorer}", label=f"{field.name} {label}", role=role, field=field.name, **{**defaults, **more})  # fmt: skip


def _named(field: FieldConfig, scores: Scores) -> Scores:
    """``{scorer: values}`` -> ``{<field>_<scorer>: values}`` for the scorers the field chose."""
    specs = {s.name for s in get_kind(field.kind).metrics(field)}
    return {f"{field.name}_{k}": v for k, v in scores.items() if f"{field.name}_{k}" in specs}


# -- text: free text such as a product name


def _text_metrics(field: FieldConfig) -> list[MetricSpec]:
    chosen = get_kind(field.kind).chosen(field)
    specs = []
    if "similarity" in chosen:
        specs.append(_spec(field, "similarity", "similarity (0-100)", "similarity"))
    if "exact" in chosen:
        specs.append(_spec(field, "exact", "exact match", "accuracy", per_group=True))
    return specs


def _text_score(field: FieldConfig, predictions: list, truths: list, labels: list[str] | None) -> Scores:
    return _named(field, scorers.columns(scorers.text_scores, predictions, truths))


# -- label: a closed vocabulary such as a category


def _label_metrics(field: FieldConfig) -> list[MetricSpec]:
    # "mapped": the answer read as the nearest train label -- beside the exact accuracy, never
    # instead of it; undefined (not a failure) where no label set is known.
    chosen = get_kind(field.kind).chosen(field)
    specs = [_spec(field, "exact", "accuracy", "accuracy", per_group=True)]
    if "mapped" in chosen:
        specs.append(_spec(field, "mapped", "accuracy (nearest label)", "accuracy", fill_missing=False))
    return specs


def _label_score(field: FieldConfig, predictions: list, truths: list, labels: list[str] | None) -> Scores:
    return _named(field, scorers.columns(scorers.label_scores, predictions, truths, labels=labels))


# -- number and price: errors and within-tolerance hits


def _number_metrics(field: FieldConfig) -> list[MetricSpec]:
    chosen = get_kind(field.kind).chosen(field)
    unit = field.currency if get_kind(field.kind).currency else None
    specs = []
    if "within" in chosen:
        for t in field.tolerances:
            specs.append(
                _spec(field, scorers.within_key(t), f"within {t:g} %", "accuracy",
                      per_group=t == max(field.tolerances))
            )  # fmt: skip
    if "abs_error" in chosen:
        specs.append(_spec(field, "abs_error", "absolute error", "error", unit=unit))
    if "ape" in chosen:
        specs.append(_spec(field, "ape", "abs. % error", "relative_error", per_group=True))
    if "log_error" in chosen:
        specs.append(_spec(field, "log_error", "log error (abs)", "error"))
    return specs


def _number_score(field: FieldConfig, predictions: list, truths: list, labels: list[str] | None) -> Scores:
    raw = scorers.columns(scorers.number_scores, predictions, truths, tolerances=field.tolerances)
    return _named(field, raw)


NUMBER_SCORERS = ("abs_error", "ape", "within", "log_error")

register(FieldKind("text", "text", ("similarity", "exact"), _text_metrics, _text_score))
register(FieldKind("label", "text", ("exact", "mapped"), _label_metrics, _label_score, categorical=True))
register(FieldKind("number", "number", NUMBER_SCORERS, _number_metrics, _number_score))
register(
    FieldKind("price", "price", NUMBER_SCORERS, _number_metrics, _number_score, positive=True, currency=True)
)
