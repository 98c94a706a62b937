"""Paired statistics of runs on one test set, sample by sample (what comparisons and reports compute).

Only the ground (``harness.core``) is imported from the project: a report can be made without torch.
Every metric's meaning (label, direction, binary or not, how a missing value counts) is read from
the run's own metric specs (written by its task): nothing here names a metric.

- 95 % CI: paired bootstrap (harness.core.stats, the same one that made metrics.json).
- p-value: exact McNemar (binomial test on the discordant pairs) for 0/1 metrics, Wilcoxon
  signed-rank for continuous ones.
- Missing values: a metric whose spec says ``fill_missing`` counts a missing value as 0 (a failure
  is a wrong answer); others (e.g. the error of a number never parsed) are compared on the pairs
  where both runs have one, and that n is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from harness.core.run import Run
from harness.core.schema import MetricSpec
from harness.core.stats import N_BOOT, SEED, mean_ci


def why_not_comparable(a: Run, b: Run) -> str | None:
    """Why two runs are not on the same test set, or None when they are (same fingerprint and ids)."""
    da, db = a.config.data, b.config.data
    if a.config.task != b.config.task:
        return f"different tasks ({a.config.task} vs {b.config.task})"
    if da.fingerprint != db.fingerprint:
        return (
            f"different data fingerprints ({da.fingerprint[:12]} from {da.source}/{da.split} vs "
            f"{db.fingerprint[:12]} from {db.source}/{db.split})"
        )
    only_a, only_b = a.ids - b.ids, b.ids - a.ids
    if only_a or only_b:
        return (
            f"same data fingerprint but different sample ids: {len(only_a)} only in A, {len(only_b)} only "
            f"in B (an unfinished run or a --limit?), e.g. {sorted(only_a | only_b)[0]!r}"
        )
    return None


def group_columns(run: Run) -> list[str]:
    """One column per label field of the task: the true label of each sample."""
    return [f"group:{f.name}" for f in run.fields if f.categorical]


def score_frame(run: Run) -> pd.DataFrame:
    """One row per sample id: the run's scores (missing -> 0 or NaN, as each spec says), the true
    label of each label field ("group:<field>") and an error flag."""
    specs = run.specs
    groups = group_columns(run)
    rows = []
    for r in run.records:
        row = {m: r.scores.get(m) for m in specs}
        row.update({g: str(r.truth.get(g.split(":", 1)[1], "")) for g in groups})
        row.update(id=r.id, error=r.error is not None)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["id", "error", *groups, *specs]).set_index("id")
    frame[list(specs)] = frame[list(specs)].astype(float)
    for spec in specs.values():
        if spec.fill_missing:
            frame[spec.name] = frame[spec.name].fillna(0.0)
    return frame


def scored_metrics(run: Run) -> list[str]:
    """The run's metrics (spec order) that at least one of its records has a score for."""
    scored = {key for r in run.records for key in r.scores}
    return [name for name in run.specs if name in scored]


@dataclass
class MetricComparison:
    metric: str
    n: int  # pairs the statistic is computed on
    a: float | None
    b: float | None
    diff: float | None  # mean of B - A over the n pairs
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    test: str
    worse: bool  # B significantly worse than A
    better: bool  # B significantly better than A
    discordant: tuple[int, int] | None = None  # McNemar: (A right B wrong, A wrong B right)


def mcnemar(a: np.ndarray, b: np.ndarray) -> tuple[float, tuple[int, int]]:
    """Exact McNemar p-value (two-sided binomial test on the discordant pairs)."""
    a_only = int(np.sum((a == 1) & (b == 0)))
    b_only = int(np.sum((a == 0) & (b == 1)))
    if a_only + b_only == 0:
        return 1.0, (a_only, b_only)
    return float(stats.binomtest(b_only, a_only + b_only, 0.5).pvalue), (a_only, b_only)


def wilcoxon(a: np.ndarray, b: np.ndarray) -> float:
    """Wilcoxon signed-rank p-value of B - A (zero differences dropped; 1.0 when all are zero)."""
    diff = b - a
    if len(diff) == 0 or np.all(diff == 0):
        return 1.0
    return float(stats.wilcoxon(diff, zero_method="wilcox").pvalue)


def paired_test(spec: MetricSpec, a: np.ndarray, b: np.ndarray) -> tuple[float, str, tuple[int, int] | None]:
    """(p-value, test, discordant pairs) of B against A on defined pairs: exact McNemar for a 0/1
    metric, Wilcoxon signed-rank otherwise."""
    if spec.binary:
        p, discordant = mcnemar(a, b)
        return p, "McNemar exact", discordant
    return wilcoxon(a, b), "Wilcoxon signed-rank", None


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: each p-value as it must be read when all of them were tested
    (family-wise error at most alpha), in the order given."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [1.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


@dataclass
class MetricSummary:
    metric: str
    n: int
    value: float | None
    ci_low: float | None
    ci_high: float | None


def summarize_run(run: Run, *, n_boot: int = N_BOOT, seed: int = SEED) -> list[MetricSummary]:
    """One run's means with 95 % bootstrap CIs: the same computation as its metrics.json."""
    frame = score_frame(run)
    names = scored_metrics(run)
    columns = [[None if np.isnan(v) else v for v in frame[name].to_numpy()] for name in names]
    return [
        MetricSummary(name, n, mean, low, high)
        for name, (mean, low, high, n) in zip(names, mean_ci(columns, n_boot=n_boot, seed=seed), strict=True)
    ]


def per_group_metrics(runs: dict[str, Run]) -> list[str]:
    """The metrics every run scored whose spec puts them in the per-label tables (the task's choice)."""
    first = next(iter(runs.values()))
    scored = [set(scored_metrics(run)) for run in runs.values()]
    return [m for m, spec in first.specs.items() if spec.per_group and all(m in s for s in scored)]


def per_group(runs: dict[str, Run]) -> dict[str, pd.DataFrame]:
    """For each label field: rows = true label; columns n and "<metric> <run label>" means for each
    run, over the same ids (the task's per-label metric set, as in its metrics.json)."""
    frames = {label: score_frame(run) for label, run in runs.items()}
    metrics = per_group_metrics(runs)
    first_run, first = next(iter(runs.values())), next(iter(frames.values()))
    tables = {}
    for column in group_columns(first_run):
        table = first.groupby(column).size().rename("n").to_frame()
        for label, frame in frames.items():
            means = frame.groupby(column)[metrics].mean()
            table = table.join(means.rename(columns=lambda m, lab=label: f"{m} {lab}"))
        table.index.name = column.split(":", 1)[1]
        tables[table.index.name] = table.sort_values("n", ascending=False)
    return tables
