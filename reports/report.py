"""``harness report A B``: find the two runs, compare them, write markdown + PNGs (+ W&B)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from harness.errors import HarnessError
from harness.schema import CONFIG_FILE, PREDICTIONS_FILE, RunConfig
from reports.compare import (
    METRICS,
    N_BOOT,
    SEED,
    Comparison,
    Run,
    compare_runs,
    per_category,
    read_run,
    summarize_run,
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


def make_report(
    a: str,
    b: str | None,
    *,
    task: str = "burberry",
    data: str | None = None,
    runs_dir: Path = Path("runs"),
    out: Path | None = None,
    wandb: bool = False,
    fail_if_worse: list[str] = [],  # noqa: B006 - never mutated; the signature the CLI mirrors
    alpha: float = 0.05,
    n_boot: int = N_BOOT,
    seed: int = SEED,
) -> ReportResult:
    """Compare run B against run A (each a run directory or a model name) and write the report.

    A model name resolves to the most recent run of that model for ``task`` (and data source ``data``)
    under ``runs_dir`` that shares its test set (fingerprint and sample ids) with the other side.
    """
    unknown = [m for m in fail_if_worse if m not in METRICS]
    if unknown:
        raise HarnessError(f"--fail-if-worse: unknown metric {unknown[0]!r}; valid: {', '.join(METRICS)}")
    if fail_if_worse and b is None:
        raise HarnessError("--fail-if-worse needs two runs (A and B) to compare")
    runs_dir = Path(runs_dir)
    if b is None:
        run_a = _only(a, task, data, runs_dir)
        return _single(run_a, out, wandb, n_boot, seed)
    run_a, run_b = resolve_pair(a, b, task=task, data=data, runs_dir=runs_dir)
    cmp = compare_runs(run_a, run_b, alpha=alpha, n_boot=n_boot, seed=seed)
    out = Path(out) if out else Path("reports") / f"{_slug(run_a, a)}-vs-{_slug(run_b, b)}.md"
    assets = _assets(out)
    runs = {"A": run_a, "B": run_b}
    per_cat = per_category(runs)
    plots = make_plots(runs, per_cat, assets)
    rel = [f"{assets.name}/{p.name}" for p in plots]
    _write(out, render_comparison(cmp, per_cat, rel, assets, alpha=alpha))
    by_name = cmp.by_name()
    worse = {m: bool(m in by_name and by_name[m].worse) for m in fail_if_worse}
    wandb_dir = None
    if wandb:
        from reports.wandb_log import log_report

        wandb_dir = log_report(runs, comparison=cmp, summary=None, per_cat=per_cat, plots=plots, markdown=out)
    return ReportResult(out, int(any(worse.values())), worse, plots, cmp, run_a.path, run_b.path, wandb_dir)


def _single(run: Run, out: Path | None, wandb: bool, n_boot: int, seed: int) -> ReportResult:
    out = Path(out) if out else Path("reports") / f"{_slug(run, run.label)}.md"
    assets = _assets(out)
    runs = {"run": run}
    per_cat = per_category(runs)
    plots = make_plots(runs, per_cat, assets)
    summary = summarize_run(run, n_boot=n_boot, seed=seed)
    rel = [f"{assets.name}/{p.name}" for p in plots]
    _write(out, render_single(run, summary, per_cat, rel, assets, n_boot=n_boot, seed=seed))
    wandb_dir = None
    if wandb:
        from reports.wandb_log import log_report

        wandb_dir = log_report(
            runs, comparison=None, summary=summary, per_cat=per_cat, plots=plots, markdown=out
        )
    return ReportResult(out, 0, {}, plots, None, run.path, None, wandb_dir)


def _assets(out: Path) -> Path:
    return out.parent / f"{out.stem}-assets"


def _write(path: Path, text: str) -> None:
    """Atomic: a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _slug(run: Run, given: str) -> str:
    text = given if not _is_run_dir(given) else run.path.name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "run"


def _is_run_dir(value: str) -> bool:
    return (Path(value) / CONFIG_FILE).is_file()


def find_runs(name: str, *, task: str, data: str | None, runs_dir: Path) -> list[Path]:
    """Run directories under ``runs_dir`` of model ``name`` for ``task`` (and data source), newest first."""
    found = []
    for config_file in Path(runs_dir).rglob(CONFIG_FILE):
        if not (config_file.parent / PREDICTIONS_FILE).is_file():
            continue  # e.g. a model's own config.json inside an adapter directory
        try:
            config = RunConfig.model_validate_json(config_file.read_text(encoding="utf-8"))
        except (ValidationError, ValueError, OSError):
            continue
        if config.model.name == name and config.task == task and (data is None or config.data.source == data):
            found.append((config.created, config_file.stat().st_mtime, config_file.parent))
    return [path for *_, path in sorted(found, reverse=True)]


def _candidates(value: str, task: str, data: str | None, runs_dir: Path) -> list[Path]:
    if _is_run_dir(value):
        return [Path(value)]
    if os.sep in value or Path(value).exists():
        raise HarnessError(f"{value}: not a run directory (no {CONFIG_FILE})")
    paths = find_runs(value, task=task, data=data, runs_dir=runs_dir)
    if not paths:
        where = f"task {task!r}" + (f", data {data!r}" if data else "")
        raise HarnessError(
            f"no run of model {value!r} ({where}) under {runs_dir}: run `harness run --model {value}` first"
        )
    return paths


def _only(value: str, task: str, data: str | None, runs_dir: Path) -> Run:
    return read_run(_candidates(value, task, data, runs_dir)[0])


def resolve_pair(a: str, b: str, *, task: str, data: str | None, runs_dir: Path) -> tuple[Run, Run]:
    """The newest pair of runs (A, B) on the same test set; HarnessError saying what differs if none is."""
    cand_a = [read_run(p) for p in _candidates(a, task, data, runs_dir)]
    cand_b = [read_run(p) for p in _candidates(b, task, data, runs_dir)]
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
    raise HarnessError(f"no runs of {a!r} and {b!r} on the same test set: " + "; ".join(reasons[:3]) + more)
