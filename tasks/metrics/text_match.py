"""Per-sample text match: rapidfuzz similarity (0-100) and exact match on normalised text."""

from __future__ import annotations

import datasets
import evaluate
from rapidfuzz import fuzz

from tasks.text import normalise

_DESCRIPTION = (
    "Text similarity (rapidfuzz token-sort ratio, 0-100) and exact match (0/1) after normalisation."
)
_INPUTS = """
Args:
    predictions: parsed values (str; "" when none was found).
    references: true values.
Returns:
    dict of lists, one entry per sample: similarity (0-100), exact (0/1). A missing value scores 0.
"""


def text_scores(pred: str | None, true: str) -> dict[str, float]:
    if not pred:
        return {"similarity": 0.0, "exact": 0.0}
    a, b = normalise(pred), normalise(true)
    # token_sort: "Cashmere Check Scarf" is nearly "Check Cashmere Scarf"; exact match stays strict.
    return {"similarity": float(fuzz.token_sort_ratio(a, b)), "exact": float(a == b)}


class TextMatch(evaluate.Metric):
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
        rows = [text_scores(p, r) for p, r in zip(predictions, references, strict=True)]
        return {key: [row[key] for row in rows] for key in ("similarity", "exact")}
