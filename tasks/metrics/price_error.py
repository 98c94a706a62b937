"""Per-sample price errors of parsed prices against true full prices.

A missing prediction (None) is a miss, never "price 0.0": the error-type scores are None and the
within-tolerance scores are 0, so a model that prints nothing is not rewarded with a finite error.
"""

from __future__ import annotations

import math

import datasets
import evaluate

_DESCRIPTION = "Absolute, percentage and log price errors, and within-10/25 % hits, one value per sample."
_INPUTS = """
Args:
    predictions: parsed prices (float or None when no price was found).
    references: true prices (float > 0).
Returns:
    dict of lists, one entry per sample: price_abs_error, price_ape, price_log_error (None when the
    prediction is missing, and price_log_error also when it is <= 0), price_within_10, price_within_25 (0/1).
"""


def price_scores(pred: float | None, true: float) -> dict[str, float | None]:
    if pred is None or not math.isfinite(pred):
        return {
            "price_abs_error": None,
            "price_ape": None,
            "price_within_10": 0.0,
            "price_within_25": 0.0,
            "price_log_error": None,
        }
    abs_err = abs(pred - true)
    ape = abs_err / abs(true) if true else None
    return {
        "price_abs_error": abs_err,
        "price_ape": ape,
        "price_within_10": float(ape is not None and ape <= 0.10),
        "price_within_25": float(ape is not None and ape <= 0.25),
        "price_log_error": abs(math.log(pred / true)) if pred > 0 and true > 0 else None,
    }


class PriceError(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions, references):
        rows = [price_scores(p, r) for p, r in zip(predictions, references, strict=True)]
        keys = rows[0].keys() if rows else price_scores(None, 1.0).keys()
        return {key: [row[key] for row in rows] for key in keys}
