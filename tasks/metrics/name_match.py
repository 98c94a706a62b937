"""Per-sample product-name match: rapidfuzz similarity (0-100) and exact match on normalised names."""

from __future__ import annotations

import re

import datasets
import evaluate
from rapidfuzz import fuzz

_DESCRIPTION = (
    "Name similarity (rapidfuzz token-sort ratio, 0-100) and exact match (0/1) after normalisation."
)
_INPUTS = """
Args:
    predictions: parsed names (str; None or "" when no name was found).
    references: true titles.
Returns:
    dict of lists, one entry per sample: name_similarity (0-100), name_exact (0/1). A missing name scores 0.
"""

_NON_WORD = re.compile(r"[^0-9a-z]+")


def normalise(text: str) -> str:
    """Lowercase, '&' read as 'and', punctuation and runs of whitespace collapsed to one space."""
    return _NON_WORD.sub(" ", text.lower().replace("&", " and ")).strip()


def name_scores(pred: str | None, true: str) -> dict[str, float]:
    if not pred:  # None or "": no name found
        return {"name_similarity": 0.0, "name_exact": 0.0}
    a, b = normalise(pred), normalise(true)
    # token_sort: "Cashmere Check Scarf" is nearly "Check Cashmere Scarf"; exact match stays strict.
    return {"name_similarity": float(fuzz.token_sort_ratio(a, b)), "name_exact": float(a == b)}


class NameMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        rows = [name_scores(p, r) for p, r in zip(predictions, references, strict=True)]
        return {key: [row[key] for row in rows] for key in ("name_similarity", "name_exact")}
