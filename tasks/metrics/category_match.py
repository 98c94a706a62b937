"""Per-sample category match: exact after normalising case, whitespace, punctuation and '&' / 'and'."""

from __future__ import annotations

import re

import datasets
import evaluate

_DESCRIPTION = "Category exact match (0/1): 'Ponchos and capes' matches 'PONCHOS & CAPES'."
_INPUTS = """
Args:
    predictions: parsed categories (str; None or "" when none was found).
    references: true category3 codes.
Returns:
    dict with category_exact: list of 0/1, one per sample. A missing category scores 0.
"""

_NON_WORD = re.compile(r"[^0-9a-z]+")


def normalise(text: str) -> str:
    # Same rule as name_match.normalise; repeated because evaluate copies each module file on its own.
    return _NON_WORD.sub(" ", text.lower().replace("&", " and ")).strip()


def category_exact(pred: str | None, true: str) -> float:
    return 0.0 if not pred else float(normalise(pred) == normalise(true))


class CategoryMatch(evaluate.Metric):
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
        return {
            "category_exact": [category_exact(p, r) for p, r in zip(predictions, references, strict=True)]
        }
