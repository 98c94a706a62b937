"""Per-sample errors of parsed numbers (e.g. prices) against the true ones.

A missing prediction (None) is a miss, never "0.0": the error-type scores are None and the
within-tolerance scores are 0, so a model that prints nothing is not rewarded with a finite error.
"""

from __future__ import annotations

import math

import datasets
import evaluate

_DESCRIPTION = "Absolute, percentage and log errors, and within-x % hits, one value per sample."
_INPUTS = """
Args:
    predictions: parsed numbers (float or None when none was found).
    references: true numbers.
    tolerances: percentages for the within_<x> hits (default 10 and 25).
Returns:
    dict of lists, one entry per sample: abs_error, ape, log_error (None when the prediction is
    missing, log_error also when either side is <= 0), within_<x> for each tolerance (0/1).
"""


def _key(tolerance: float) -> str:
    return f"within_{tolerance:g}"


def number_scores(pred: float | None, true: float, tolerances=(10.0, 25.0)) -> dict[str, float | None]:
    if pred is None or not math.isfinite(pred):
        return {"abs_error": None, "ape": None, "log_error": None, **{_key(t): 0.0 for t in tolerances}}
    abs_err = abs(pred - true)
    ape = abs_err / abs(true) if true else None
    return {
        "abs_error": abs_err,
        "ape": ape,
        "log_error": abs(math.log(pred / true)) if pred > 0 and true > 0 else None,
        **{_key(t): float(ape is not None and ape <= t / 100) for t in tolerances},
    }


class NumberError(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions, references, tolerances=(10.0, 25.0)):
        rows = [number_scores(p, r, tolerances) for p, r in zip(predictions, references, strict=True)]
        keys = number_scores(None, 1.0, tolerances).keys()
        return {key: [row[key] for row in rows] for key in keys}
