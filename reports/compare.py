"""Reading run directories and comparing two runs sample by sample.

Only ``harness.schema`` and the run store's reader are imported from the project: a report can be
made without torch.

Statistics (all paired by sample id, difference = B - A):

- 95 % CI: paired bootstrap. Each resample draws the sample ids with replacement (as multinomial
  counts from a seeded numpy Generator) and every metric is averaged over the same resample, so
  the metrics' CIs are consistent with one another.
- p-value: exact McNemar (binomial test on the discordant pairs) for the 0/1 accuracies,
  Wilcoxon signed-rank for the continuous scores.
- Missing values: an accuracy or similarity that is missing (the sample errored) counts as 0 --
  a failure is a wrong answer. Price errors are undefined when no price was parsed, so they are
  compared on the pairs where both runs have one, and that n is reported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from harness.errors import HarnessError
from harness.schema import PREDICTIONS_FILE, Record, RunConfig, RunMetrics
from harness.store import load_run

N_BOOT = 10_000
SEED = 0
_CHUNK = 1_000  # resamples per matrix product: bounds memory at _CHUNK x n counts


@dataclass(frozen=True)
class Metric:
    name: str
    binary: bool  # 0/1 per sample -> McNemar; otherwise Wilcoxon
    higher_is_better: bool
    fill_missing: bool  # missing -> 0 (a failure); otherwise only pairs where both are defined
    label: str
    percent: bool = False  # shown x100 with "%" (accuracies, and the APE fraction)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        Metric("name_similarity", False, True, True, "name similarity (0-100)"),
        Metric("name_exact", True, True, True, "name exact match", True),
        Metric("category_exact", True, True, True, "category accuracy", True),
        Metric("price_within_10", True, True, True, "price within 10 %", True),
        Metric("price_within_25", True, True, True, "price within 25 %", True),
        Metric("price_abs_error", False, False, False, "price absolute error"),
        Metric("price_ape", False, False, False, "price abs. % error", True),
        Metric("price_log_error", False, False, False, "price log error (abs)"),
        Metric("parsed", True, True, True, "answer parsed", True),
    ]
}


@dataclass
class Run:
    """One run directory as read from disk."""

    path: Path
    config: RunConfig
    records: list[Record]
    metrics: RunMetrics | None = None
    torn_last_line: bool = False
    duplicates: int = 0

    @property
    def ids(self) -> set[str]:
        return {r.id for r in self.records}

    @property
    def label(self) -> str:
        return self.config.model.name


def read_run(path: str | Path) -> Run:
    """A run directory through the run store's own reader (the one the runner resumes with).

    A torn last line of predictions.jsonl (a crash mid-append) is dropped and flagged; a bad line
    elsewhere is corruption and raises. When a sample id repeats, the first record counts, as in the
    run's metrics.json.
    """
    path = Path(path)
    config, records, metrics = load_run(path)
    pred_file = path / PREDICTIONS_FILE
    if not pred_file.is_file():
        raise HarnessError(f"{pred_file}: missing (the run wrote no predictions)")
    by_id: dict[str, Record] = {}
    for record in records:
        by_id.setdefault(record.id, record)
    return Run(
        path, config, list(by_id.values()), metrics, _ends_mid_line(pred_file), len(records) - len(by_id)
    )


def _ends_mid_line(file: Path) -> bool:
    """The writer died mid-append: the file does not end with a newline."""
    with open(file, "rb") as f:
        if f.seek(0, os.SEEK_END) == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


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


def score_frame(run: Run) -> pd.DataFrame:
    """One row per sample id: the known scores (NaN where missing) plus category, error, parse flags."""
    rows = []
    for r in run.records:
        row = {m: r.scores.get(m) for m in METRICS}
        row.update(id=r.id, category=r.truth.category, error=r.error is not None)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["id", "category", "error", *METRICS]).set_index("id")
    frame[list(METRICS)] = frame[list(METRICS)].astype(float)
    for m in METRICS.values():
        if m.fill_missing:
            frame[m.name] = frame[m.name].fillna(0.0)
    return frame


def scored_metrics(run: Run) -> set[str]:
    """The known metrics the run's task produced (a task need not produce all of them)."""
    return {key for r in run.records for key in r.scores} & set(METRICS)


def bootstrap_means(values: np.ndarray, *, n_boot: int = N_BOOT, seed: int = SEED) -> np.ndarray:
    """Bootstrap distribution of each column's mean, NaNs left out: (n_boot, columns).

    Every resample draws the rows (sample ids) with replacement: multinomial counts over the n rows,
    drawn in chunks of _CHUNK from ``np.random.default_rng(seed)``; a column's mean in a resample is
    the count-weighted mean of its defined rows (NaN when the resample holds none).
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


@dataclass
class Comparison:
    a: Run
    b: Run
    paired: pd.DataFrame  # columns "<metric>_a", "<metric>_b", "category", ...; index = sample id
    metrics: list[MetricComparison] = field(default_factory=list)
    n_boot: int = N_BOOT
    seed: int = SEED

    def by_name(self) -> dict[str, MetricComparison]:
        return {m.metric: m for m in self.metrics}


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


def compare_runs(
    a: Run, b: Run, *, alpha: float = 0.05, n_boot: int = N_BOOT, seed: int = SEED
) -> Comparison:
    """Paired comparison of B against A on every metric either run scored. Refuses different test sets."""
    reason = why_not_comparable(a, b)
    if reason:
        raise HarnessError(f"refusing to compare {a.path} with {b.path}: {reason}")
    fa, fb = score_frame(a), score_frame(b)
    paired = fa.join(fb.drop(columns="category"), lsuffix="_a", rsuffix="_b", how="inner").sort_index()
    names = [m for m in METRICS if m in scored_metrics(a) | scored_metrics(b)]
    diffs = np.column_stack([paired[f"{m}_b"] - paired[f"{m}_a"] for m in names]) if names else None
    boot = bootstrap_means(diffs, n_boot=n_boot, seed=seed) if names else None
    result = Comparison(a, b, paired, n_boot=n_boot, seed=seed)
    for j, name in enumerate(names):
        spec = METRICS[name]
        col_a, col_b = paired[f"{name}_a"].to_numpy(), paired[f"{name}_b"].to_numpy()
        both = ~np.isnan(col_a) & ~np.isnan(col_b)
        va, vb = col_a[both], col_b[both]
        n = int(both.sum())
        if n == 0:
            result.metrics.append(
                MetricComparison(name, 0, None, None, None, None, None, None, "-", False, False)
            )
            continue
        lo, hi = np.nanpercentile(boot[:, j], [2.5, 97.5])
        if spec.binary:
            p, disc = mcnemar(va, vb)
            test = "McNemar exact"
        else:
            p, disc = wilcoxon(va, vb), None
            test = "Wilcoxon signed-rank"
        bad_side = hi < 0 if spec.higher_is_better else lo > 0
        good_side = lo > 0 if spec.higher_is_better else hi < 0
        result.metrics.append(
            MetricComparison(
                name, n, float(va.mean()), float(vb.mean()), float((vb - va).mean()), float(lo), float(hi),
                p, test, bool(bad_side and p < alpha), bool(good_side and p < alpha), disc,
            )
        )  # fmt: skip
    return result


@dataclass
class MetricSummary:
    metric: str
    n: int
    value: float | None
    ci_low: float | None
    ci_high: float | None


def summarize_run(run: Run, *, n_boot: int = N_BOOT, seed: int = SEED) -> list[MetricSummary]:
    """One run's means with 95 % bootstrap CIs (the single-model report)."""
    frame = score_frame(run)
    names = [m for m in METRICS if m in scored_metrics(run)]
    if not names:
        return []
    values = frame[names].to_numpy()
    boot = bootstrap_means(values, n_boot=n_boot, seed=seed)
    out = []
    for j, name in enumerate(names):
        col = values[:, j][~np.isnan(values[:, j])]
        lo, hi = np.nanpercentile(boot[:, j], [2.5, 97.5])
        out.append(MetricSummary(name, len(col), float(col.mean()), float(lo), float(hi)))
    return out


CATEGORY_METRICS = ["category_exact", "name_exact", "price_within_25"]


def per_category(runs: dict[str, Run]) -> pd.DataFrame:
    """Rows = true category; columns n and "<metric> <label>" means for each run, over the same ids."""
    frames = {label: score_frame(run) for label, run in runs.items()}
    first = next(iter(frames.values()))
    table = first.groupby("category").size().rename("n").to_frame()
    for label, frame in frames.items():
        means = frame.groupby("category")[CATEGORY_METRICS].mean()
        table = table.join(means.rename(columns=lambda m, lab=label: f"{m} {lab}"))
    return table.sort_values("n", ascending=False)
