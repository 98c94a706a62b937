"""`evaluate` module: per-sample text similarity (0-100) and exact match (tasks/scorers.py)."""

from __future__ import annotations

import datasets
import evaluate

from tasks.metrics import string_features
from tasks.scorers import columns, text_scores


class TextMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=text_scores.__doc__, citation="", features=string_features(datasets)
        )

    def _compute(self, predictions, references):
        return columns(text_scores, predictions, references)
