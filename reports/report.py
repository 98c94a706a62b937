"""Writing reports: the markdown, its plots and thumbnails (and a W&B run) of a comparison or of one run."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from harness.core.run import Run
from harness.core.stats import N_BOOT, SEED
from harness.core.store import write_atomic
from reports.markdown import render_comparison, render_single
from reports.paired import per_group, summarize_run
from reports.plots import make_plots

if TYPE_CHECKING:
    from reports.compare import Comparison


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


# Reports go to the run store's side, never into the source package `reports/`.
DEFAULT_DIR = Path("runs") / "reports"


def write_comparison(cmp: Comparison, out: Path | None = None, *, wandb: bool = False) -> ReportResult:
    """The markdown (and plots, thumbnails, optionally a W&B run) of a comparison."""
    run_a, run_b = cmp.a, cmp.b
    out = Path(out) if out else DEFAULT_DIR / f"{slug(run_a)}-vs-{slug(run_b)}.md"
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


def write_single(
    run: Run, out: Path | None = None, *, wandb: bool = False, n_boot: int = N_BOOT, seed: int = SEED
) -> ReportResult:
    """The markdown (and plots, thumbnails, optionally a W&B run) of one run."""
    out = Path(out) if out else DEFAULT_DIR / f"{slug(run)}.md"
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


def slug(run: Run) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run.label).strip("_") or "run"
