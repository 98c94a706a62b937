"""The one bootstrap: every confidence interval harness prints (metrics.json, reports) comes from here.

Percentile bootstrap over sample ids: each resample draws the n rows with replacement (multinomial
counts from ``np.random.default_rng(seed)``), and every column is averaged over the same resample,
so the CIs of different metrics (and of paired differences) are consistent with one another. An
undefined value (NaN, e.g. an error of a number never parsed) is left out of its column's mean in each resample.

Imports numpy only: the ground floor, shared by tasks/ and reports/.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

N_BOOT = 10_000
SEED = 0
CONFIDENCE = 0.95
_CHUNK = 1_000  # resamples per matrix product: bounds memory at _CHUNK x n counts


def bootstrap_means(values: np.ndarray, *, n_boot: int = N_BOOT, seed: int = SEED) -> np.ndarray:
    """Bootstrap distribution of each column's mean, NaNs left out: (n_boot, columns).

    A column's mean in a resample is the count-weighted mean of its defined rows (NaN when the
    resample holds none of them).
    """
    values = np.atleast_2d(np.asarray(values, dtype=float).T).T
    n = values.shape[0]
    defined = ~np.isnan(values)
    filled = np.where(defined, values, 0.0)
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, n_boot, _CHUNK):
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=min(_CHUNK, n_boot - start)).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append((counts @ filled) / (counts @ defined))
    return np.concatenate(out)


def percentile_ci(boot: np.ndarray, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper percentile bounds of each column of a bootstrap distribution."""
    tail = 100 * (1 - confidence) / 2
    with warnings.catch_warnings():  # a column never defined gives NaN bounds: expected, not news
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(boot, [tail, 100 - tail], axis=0)
    return np.atleast_1d(low), np.atleast_1d(high)


def mean_ci(
    columns: Sequence[Sequence[float | None]], *, n_boot: int = N_BOOT, seed: int = SEED
) -> list[tuple[float | None, float | None, float | None, int]]:
    """(mean, ci_low, ci_high, n defined) per column; None marks an undefined value.

    All columns must have one entry per sample (the same rows), so they share the resamples.
    A column with no defined value gives (None, None, None, 0); a constant column a zero-width CI.
    """
    if not columns:
        return []
    matrix = np.array([[np.nan if v is None else float(v) for v in col] for col in columns], dtype=float).T
    if matrix.size == 0:
        return [(None, None, None, 0) for _ in columns]
    boot = bootstrap_means(matrix, n_boot=n_boot, seed=seed)
    lows, highs = percentile_ci(boot)
    out = []
    for j in range(matrix.shape[1]):
        col = matrix[:, j][~np.isnan(matrix[:, j])]
        if col.size == 0:
            out.append((None, None, None, 0))
        elif np.all(col == col[0]):  # every resample is the same: exactly zero width, no rounding
            out.append((float(col[0]), float(col[0]), float(col[0]), int(col.size)))
        else:
            out.append((float(col.mean()), float(lows[j]), float(highs[j]), int(col.size)))
    return out
