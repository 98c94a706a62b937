"""``harness report A B``: find the two runs, compare them, write markdown + PNGs (+ W&B)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.schema import CONFIG_FILE
from harness.core.store import write_atomic
from reports.compare import (
    N_BOOT,
    SEED,
    Comparison,
    Run,
    compare_runs,
    per_group,
    read_run,
    summarize_run,
    why_incomplete,
    why_not_comparable,
)
from reports.markdown import render_comparison, render_single
from reports.plots import make_plots


@dataclass
class ReportResult:
    markdown: Path
    exit_code: int  # 1 when B is significantly worse than A on a --fail-if-worse metric, else 0
    worse: dict[str, bool] = field(default_factory=dict)  # gated metric -> B significantly worse
    plots: list[Path] = field(default_factory=list)
    comparison: Comparison | None = None
    run_a: Path | None = None
    run_b: Path | None = None
    wandb_dir: Path | None = None


Candidates = str | Path | list[Path]  # a run directory, or a model's run directories newest first
# Reports go to the run store's side, never into the source package `reports/`.
DEFAULT_DIR = Path("runs") / "reports"


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
        return _single(run_a, out, wandb, n_boot, seed)
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


def write_comparison(cmp: Comparison, out: Path | None = None, *, wandb: bool = False) -> ReportResult:
    """The markdown (and plots, thumbnails, optionally a W&B run) of a comparison."""
    run_a, run_b = cmp.a, cmp.b
    out = Path(out) if out else DEFAULT_DIR / f"{_slug(run_a)}-vs-{_slug(run_b)}.md"
    assets = _assets(out)
    runs = {"A": run_a, "B": run_b}
    per_label = per_group(runs)
    plots = make_plots(runs, per_label, assets)
    rel = [f"{assets.name}/{p.name}" for p in plots]
    _write(out, render_comparison(cmp, per_label, rel, assets, alpha=cmp.alpha))
    wandb_dir = None
    if wandb:
        from reports.wandb_log import log_report

        wandb_dir = log_report(
            runs, comparison=cmp, summary=None, per_group=per_label, plots=plots, markdown=out
        )
    return ReportResult(out, 0, {}, plots, cmp, run_a.path, run_b.path, wandb_dir)


def _single(run: Run, out: Path | None, wandb: bool, n_boot: int, seed: int) -> ReportResult:
    out = Path(out) if out else DEFAULT_DIR / f"{_slug(run)}.md"
    assets = _assets(out)
    runs = {"run": run}
    per_label = per_group(runs)
    plots = make_plots(runs, per_label, assets)
    summary = summarize_run(run, n_boot=n_boot, seed=seed)
    rel = [f"{assets.name}/{p.name}" for p in plots]
    _write(out, render_single(run, summary, per_label, rel, assets, n_boot=n_boot, seed=seed))
    wandb_dir = None
    if wandb:
        from reports.wandb_log import log_report

        wandb_dir = log_report(
            runs, comparison=None, summary=summary, per_group=per_label, plots=plots, markdown=out
        )
    return ReportResult(out, 0, {}, plots, None, run.path, None, wandb_dir)


def _assets(out: Path) -> Path:
    return out.parent / f"{out.stem}-assets"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)


def _slug(run: Run) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run.label).strip("_") or "run"


def _is_run_dir(value: str | Path) -> bool:
    return (Path(value) / CONFIG_FILE).is_file()


def _read_all(candidates: Candidates) -> list[Run]:
    paths = [Path(candidates)] if isinstance(candidates, str | Path) else list(candidates)
    for path in paths:
        if not _is_run_dir(path):
            raise HarnessError(f"{path}: not a run directory (no {CONFIG_FILE})")
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
