"""Per-sample scorers, one per field kind: plain functions on plain values.

The harness calls these directly, a batch at a time; tasks/metrics/ wraps the same functions as
`evaluate` modules (``evaluate.load("tasks/metrics/number_error.py")``) for anyone scoring outside
the harness -- a test holds the two equal. Calling them directly keeps `evaluate`'s import (scipy,
pipelines: ~0.8 s a process) and its Arrow round trips off every `harness run`.
"""

from __future__ import annotations

import math

from rapidfuzz import fuzz, process

from tasks.text import normalise


def text_scores(pred: str | None, true: str) -> dict[str, float]:
    """similarity (rapidfuzz token-sort ratio, 0-100) and exact (0/1) after normalisation; a missing
    value scores 0 on both."""
    if not pred:
        return {"similarity": 0.0, "exact": 0.0}
    a, b = normalise(pred), normalise(true)
    # token_sort: "Cashmere Check Scarf" is nearly "Check Cashmere Scarf"; exact match stays strict.
    return {"similarity": float(fuzz.token_sort_ratio(a, b)), "exact": float(a == b)}


MAPPED_CUTOFF = 60.0  # token-sort ratio an answer must reach against a label to be read as it


def label_scores(pred: str | None, true: str, labels: list[str] | None = None) -> dict[str, float | None]:
    """exact (0/1) after normalisation: 'Ponchos and capes' matches 'PONCHOS & CAPES'; and mapped:
    right (0/1) once the answer is read as the nearest of the known ``labels`` (rapidfuzz token-sort
    ratio), the closed-set reading of a free answer. An answer near no label (below MAPPED_CUTOFF),
    or equally near two, maps to none and scores 0: a non-answer is never read as the commonest
    label. No labels known: mapped is None (undefined), never a guess."""
    exact = 0.0 if not pred else float(normalise(pred) == normalise(true))
    if labels is None:
        return {"exact": exact, "mapped": None}
    answer = normalise(pred) if pred else ""
    if not answer or not labels:
        return {"exact": exact, "mapped": 0.0}
    choices = sorted({normalise(label) for label in labels})
    best = process.extract(answer, choices, scorer=fuzz.token_sort_ratio, limit=2, score_cutoff=MAPPED_CUTOFF)
    if not best or (len(best) > 1 and best[1][1] == best[0][1]):
        return {"exact": exact, "mapped": 0.0}
    return {"exact": exact, "mapped": float(best[0][0] == normalise(true))}


def within_key(tolerance: float) -> str:
    return f"within_{tolerance:g}"


def number_scores(pred: float | None, true: float, tolerances=(10.0, 25.0)) -> dict[str, float | None]:
    """abs_error, ape, log_error and within_<x> (0/1) per tolerance in percent.

    A missing prediction is a miss, never "0.0": the error scores are None and the within-tolerance
    scores 0, so a model that prints nothing is not rewarded with a finite error.
    """
    if pred is None or not math.isfinite(pred):
        return {"abs_error": None, "ape": None, "log_error": None, **{within_key(t): 0.0 for t in tolerances}}
    abs_err = abs(pred - true)
    ape = abs_err / abs(true) if true else None
    return {
        "abs_error": abs_err,
        "ape": ape,
        "log_error": abs(math.log(pred / true)) if pred > 0 and true > 0 else None,
        **{within_key(t): float(ape is not None and ape <= t / 100) for t in tolerances},
    }


def columns(scorer, predictions: list, references: list, **kwargs) -> dict[str, list]:
    """A batch through one scorer: {score name: one value per sample}."""
    rows = [scorer(p, r, **kwargs) for p, r in zip(predictions, references, strict=True)]
    keys = rows[0].keys() if rows else scorer(None, "", **kwargs).keys()
    return {key: [row[key] for row in rows] for key in keys}
