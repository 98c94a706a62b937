"""Comparing two runs on the same test set: the Comparison (``harness.compare``), and ``harness
report A [B]``'s choice of runs.

Statistics (reports/paired.py), all paired by sample id, difference = B - A. Only metrics both runs
scored are compared; the others are listed as left out. Unfinished or incomplete runs are refused
unless allowed: their numbers are not final.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness.core.errors import HarnessError
from harness.core.run import Run, read_run, why_incomplete
from harness.core.schema import MetricSpec
from harness.core.stats import N_BOOT, SEED, bootstrap_means, percentile_ci
from reports.paired import (
    MetricComparison,
    group_columns,
    paired_test,
    score_frame,
    scored_metrics,
    why_not_comparable,
)
from reports.report import ReportResult, write_comparison, write_single

Candidates = str | Path | list[Path]  # a run directory, or a model's run directories newest first


@dataclass
class Comparison:
    a: Run
    b: Run
    paired: pd.DataFrame  # columns "<metric>_a", "<metric>_b", "group:<field>", ...; index = sample id
    metrics: list[MetricComparison] = field(default_factory=list)
    n_boot: int = N_BOOT
    seed: int = SEED
    left_out: dict[str, str] = field(default_factory=dict)  # metric -> why it is not compared
    alpha: float = 0.05

    def by_name(self) -> dict[str, MetricComparison]:
        return {m.metric: m for m in self.metrics}

    def to_markdown(self, out: str | Path | None = None) -> Path:
        """Write the report (markdown, plots, thumbnails); default runs/reports/A-vs-B.md."""
        return write_comparison(self, Path(out) if out else None).markdown

    def to_wandb(self, out: str | Path | None = None) -> Path:
        """Write the report and log it as a W&B run (offline without an API key); its files directory."""
        return write_comparison(self, Path(out) if out else None, wandb=True).wandb_dir

    @property
    def specs(self) -> dict[str, MetricSpec]:
        return {**self.b.specs, **self.a.specs}


def compare_runs(
    a: Run, b: Run, *, alpha: float = 0.05, n_boot: int = N_BOOT, seed: int = SEED
) -> Comparison:
    """Paired comparison of B against A on every metric both runs scored. Refuses different test sets.

    A metric only one run scored is left out (and listed), never compared against a filled-in 0.
    """
    reason = why_not_comparable(a, b)
    if reason:
        raise HarnessError(f"refusing to compare {a.path} with {b.path}: {reason}")
    fa, fb = score_frame(a), score_frame(b)
    paired = fa.join(fb.drop(columns=group_columns(b)), lsuffix="_a", rsuffix="_b", how="inner").sort_index()
    in_a, in_b = scored_metrics(a), scored_metrics(b)
    names = [m for m in in_a if m in in_b]
    left_out = {m: "only in A" for m in in_a if m not in in_b} | {
        m: "only in B" for m in in_b if m not in in_a
    }
    diffs = np.column_stack([paired[f"{m}_b"] - paired[f"{m}_a"] for m in names]) if names else None
    boot = bootstrap_means(diffs, n_boot=n_boot, seed=seed) if names else None
    lows, highs = percentile_ci(boot) if names else (None, None)
    result = Comparison(a, b, paired, n_boot=n_boot, seed=seed, left_out=left_out, alpha=alpha)
    for j, name in enumerate(names):
        spec = a.specs[name]
        col_a, col_b = paired[f"{name}_a"].to_numpy(), paired[f"{name}_b"].to_numpy()
        both = ~np.isnan(col_a) & ~np.isnan(col_b)
        va, vb = col_a[both], col_b[both]
        n = int(both.sum())
        if n == 0:
            result.metrics.append(
                MetricComparison(name, 0, None, None, None, None, None, None, "-", False, False)
            )
            continue
        lo, hi = lows[j], highs[j]
        p, test, disc = paired_test(spec, va, vb)
        bad_side = hi < 0 if spec.higher_is_better else lo > 0
        good_side = lo > 0 if spec.higher_is_better else hi < 0
        result.metrics.append(
            MetricComparison(
                name, n, float(va.mean()), float(vb.mean()), float((vb - va).mean()), float(lo), float(hi),
                p, test, bool(bad_side and p < alpha), bool(good_side and p < alpha), disc,
            )
        )  # fmt: skip
    return result


def make_report(
    a: Candidates,
    b: Candidates | None,
    *,
    out: Path | None = None,
    wandb: bool = False,
    fail_if_worse: list[str] = [],  # noqa: B006 - never mutated; the signature the CLI mirrors
    allow_incomplete: bool = False,
    alpha: float = 0.05,
    n_boot: int = N_BOOT,
    seed: int = SEED,
) -> ReportResult:
    """Compare run B against run A and write the report (B None: describe run A).

    Each side is a run directory, or a list of candidate run directories (newest first, e.g. every
    run of one model as ``harness report NAME`` resolves it): the newest pair on the same test set
    (fingerprint and sample ids) is compared. An unfinished or incomplete run is refused unless
    ``allow_incomplete``: its numbers are not final.
    """
    if fail_if_worse and b is None:
        raise HarnessError("--fail-if-worse needs two runs (A and B) to compare")
    if b is None:
        run_a = usable(_read_all(a), allow_incomplete)[0]
        return write_single(run_a, out, wandb=wandb, n_boot=n_boot, seed=seed)
    run_a, run_b = resolve_pair(
        usable(_read_all(a), allow_incomplete), usable(_read_all(b), allow_incomplete)
    )
    cmp = compare_runs(run_a, run_b, alpha=alpha, n_boot=n_boot, seed=seed)
    unknown = [m for m in fail_if_worse if m not in cmp.specs]
    if unknown:
        raise HarnessError(f"--fail-if-worse: unknown metric {unknown[0]!r}; valid: {', '.join(cmp.specs)}")
    result = write_comparison(cmp, out, wandb=wandb)
    by_name = cmp.by_name()
    result.worse = {m: bool(m in by_name and by_name[m].worse) for m in fail_if_worse}
    result.exit_code = int(any(result.worse.values()))
    return result


def _read_all(candidates: Candidates) -> list[Run]:
    paths = [Path(candidates)] if isinstance(candidates, str | Path) else list(candidates)
    if not paths:
        raise HarnessError("no run to report on")
    return [read_run(p) for p in paths]


def usable(runs: list[Run], allow_incomplete: bool) -> list[Run]:
    """Complete runs only, unless allowed: an unfinished or incomplete run's numbers are not final."""
    if allow_incomplete:
        return runs
    good = [r for r in runs if why_incomplete(r) is None]
    if not good:
        raise HarnessError(
            f"{runs[0].path}: {why_incomplete(runs[0])}; report it anyway with --allow-incomplete"
        )
    return good


def resolve_pair(cand_a: list[Run], cand_b: list[Run]) -> tuple[Run, Run]:
    """The newest pair of runs (A, B) on the same test set; HarnessError saying what differs if none is."""
    reasons = []
    for run_a in cand_a:
        for run_b in cand_b:
            if run_a.path.resolve() == run_b.path.resolve():
                continue
            reason = why_not_comparable(run_a, run_b)
            if reason is None:
                return run_a, run_b
            reasons.append(f"{run_a.path} vs {run_b.path}: {reason}")
    if not reasons:
        raise HarnessError(f"A and B resolve to the same run ({cand_a[0].path}): nothing to compare")
    more = f" (and {len(reasons) - 3} more pairs)" if len(reasons) > 3 else ""
    raise HarnessError("no runs of A and B on the same test set: " + "; ".join(reasons[:3]) + more)
