"""`evaluate` module: per-sample absolute, percentage and log errors and within-x % hits (tasks/scorers.py)."""

from __future__ import annotations

import datasets
import evaluate

from tasks.scorers import columns, number_scores


class NumberError(evaluate.Metric):
    def _info(self):
        features = {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
        return evaluate.MetricInfo(
            description=number_scores.__doc__, citation="", features=datasets.Features(features)
        )

    def _compute(self, predictions, references, tolerances=(10.0, 25.0)):
        return columns(number_scores, predictions, references, tolerances=tolerances)
