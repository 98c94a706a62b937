"""Confidence intervals for per-sample scores."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from harness.schema import MetricValue


def bootstrap_ci(
    values: Sequence[float], *, seed: int = 0, n_resamples: int = 2000, confidence: float = 0.95
) -> MetricValue:
    """Mean with a percentile-bootstrap CI (fixed seed, so the same scores give the same interval).

    n=0 -> value None; n=1 or constant scores -> a zero-width interval at the mean (scipy would
    return NaN there, since every resample is identical).
    """
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return MetricValue(value=None, n=0)
    mean = float(data.mean())
    if data.size == 1 or np.all(data == data[0]):
        return MetricValue(value=mean, ci_low=mean, ci_high=mean, n=int(data.size))
    res = stats.bootstrap(
        (data,),
        np.mean,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
        vectorized=True,
    )
    low, high = res.confidence_interval
    return MetricValue(value=mean, ci_low=float(low), ci_high=float(high), n=int(data.size))
