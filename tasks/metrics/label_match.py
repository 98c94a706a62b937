"""Per-sample label match: exact after normalising case, whitespace, punctuation and '&' / 'and'."""

from __future__ import annotations

import datasets
import evaluate

from tasks.text import normalise

_DESCRIPTION = "Label exact match (0/1): 'Ponchos and capes' matches 'PONCHOS & CAPES'."
_INPUTS = """
Args:
    predictions: parsed labels (str; "" when none was found).
    references: true labels.
Returns:
    dict with exact: list of 0/1, one per sample. A missing label scores 0.
"""


def label_exact(pred: str | None, true: str) -> float:
    return 0.0 if not pred else float(normalise(pred) == normalise(true))


class LabelMatch(evaluate.Metric):
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
        return {"exact": [label_exact(p, r) for p, r in zip(predictions, references, strict=True)]}
