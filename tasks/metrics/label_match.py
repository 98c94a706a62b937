"""`evaluate` module: per-sample label exact match after normalisation, and the match of the nearest
known label when ``labels`` are given (tasks/scorers.py)."""

from __future__ import annotations

import datasets
import evaluate

from tasks.metrics import string_features
from tasks.scorers import columns, label_scores


class LabelMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=label_scores.__doc__, citation="", features=string_features(datasets)
        )

    def _compute(self, predictions, references, labels=None):
        return columns(label_scores, predictions, references, labels=labels)
