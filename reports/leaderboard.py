"""The leaderboard: which model, prompt or fine-tune is best on a test set, by how much, at what cost,
and whether the difference is real (``harness leaderboard``, ``harness.leaderboard``).

- Runs are grouped by test set (task, data fingerprint, split): runs of different test sets are
  never ranked together, each set gets its own table.
- One metric ranks (default: the task's primary metric). The best run is compared with every other
  run on the same samples by the pairwise report's paired test (exact McNemar for a 0/1 metric,
  Wilcoxon signed-rank otherwise), with Holm's correction across the table: the runs not
  significantly worse than the best share rank 1; the others follow by value (equal values, equal
  rank). Every CI is the one bootstrap's (harness.core.stats), as in metrics.json.
- The ranking depends on the runs only, never on the order they were given in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness.core.errors import HarnessError
from harness.core.run import Run, read_run, run_dirs, why_incomplete
from harness.core.schema import TRAIN_MANIFEST_FILE, MetricSpec, spec_with_role
from harness.core.stats import N_BOOT, SEED, bootstrap_means, percentile_ci
from harness.core.store import read_manifest, write_atomic
from reports.markdown import cell, fmt_diff, fmt_p, fmt_value, table
from reports.paired import holm, paired_test, score_frame, summarize_run
from reports.plots import forest_plot, learning_curves
from reports.report import DEFAULT_DIR

ALPHA = 0.05


@dataclass
class Entry:
    """One run's row: its standing on the ranking metric and its numbers."""

    run: Run
    rank: int | None = 1  # None: the run has no value for the ranking metric (not ranked)
    tied_with_best: bool = True
    value: float | None = None
    ci: tuple[float | None, float | None] = (None, None)
    diff: float | None = None  # this run minus the best, on the samples both scored
    diff_ci: tuple[float | None, float | None] = (None, None)
    p_value: float | None = None  # the paired test against the best
    p_holm: float | None = None
    test: str = ""
    metrics: dict[str, tuple[float | None, float | None, float | None]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        model = self.run.config.model
        return model.name if not model.adapter else f"{model.name} (+{Path(model.adapter).name})"


@dataclass
class Board:
    """The runs of one test set, ranked."""

    task: str
    source: str
    split: str
    fingerprint: str
    metric: MetricSpec
    specs: dict[str, MetricSpec]
    entries: list[Entry]

    @property
    def title(self) -> str:
        return f"{self.task} — {self.source} / {self.split} ({len(self.entries[0].run.records)} samples, data {self.fingerprint[:12]})"  # fmt: skip


@dataclass
class Leaderboard:
    boards: list[Board]
    skipped: list[str] = field(default_factory=list)  # runs left out, each with why
    n_boot: int = N_BOOT
    seed: int = SEED
    alpha: float = ALPHA

    def to_frame(self) -> pd.DataFrame:
        """One row per run, every test set: rank, model, prompt, every metric with its CI, costs."""
        return pd.DataFrame([_row(board, entry) for board in self.boards for entry in board.entries])

    def to_markdown(self, out: str | Path | None = None) -> Path:
        """The markdown (escaped) with a forest plot per test set and the fine-tunes' learning curves."""
        return self._write(out)[0]

    def to_csv(self, path: str | Path) -> Path:
        return _write(Path(path), self.to_frame().to_csv(index=False))

    def to_json(self, path: str | Path) -> Path:
        return _write(Path(path), self.to_frame().to_json(orient="records", indent=1) + "\n")

    def to_wandb(self, out: str | Path | None = None) -> Path:
        """The markdown, then the table and its plots as a W&B run (offline without an API key);
        returns the W&B run's files directory."""
        from reports.wandb_log import log_leaderboard

        markdown, plots = self._write(out)
        return log_leaderboard(self.to_frame(), plots, markdown)

    def _write(self, out: str | Path | None) -> tuple[Path, list[Path]]:
        out = Path(out) if out else DEFAULT_DIR / "leaderboard.md"
        assets = out.parent / f"{out.stem}-assets"
        assets.mkdir(parents=True, exist_ok=True)
        text, plots = render(self, assets)
        return _write(out, text), plots


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)
    return path


def build(
    runs: Iterable[Run],
    *,
    metric: str | None = None,
    alpha: float = ALPHA,
    n_boot: int = N_BOOT,
    seed: int = SEED,
) -> Leaderboard:
    """Rank ``runs`` on each of their test sets by ``metric`` (default: the task's primary metric)."""
    runs = sorted(runs, key=_stable_key)  # the order runs are given in never matters
    if not runs:
        raise HarnessError("no runs to rank")
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.config.task, run.config.data.fingerprint, run.config.data.split), []).append(
            run
        )
    boards = [_board(group, metric, alpha, n_boot, seed) for group in groups.values()]
    return Leaderboard(
        sorted(boards, key=lambda b: (b.task, b.split, b.fingerprint)), [], n_boot, seed, alpha
    )


def _stable_key(run: Run) -> tuple:
    c = run.config
    return (c.task, c.data.fingerprint, c.key or run.path.name, str(run.path))


def primary_metric(runs: list[Run], metric: str | None) -> tuple[MetricSpec, dict[str, MetricSpec]]:
    """The ranking metric (the one asked for, else the task's primary, else its first accuracy) and
    every metric any of the runs has. Runs that name different primaries are not ranked together."""
    specs = {name: spec for run in reversed(runs) for name, spec in run.specs.items()}
    if metric is not None:
        if metric not in specs:
            raise HarnessError(f"--metric: unknown metric {metric!r}; valid: {', '.join(specs)}")
        return specs[metric], specs
    primaries = {s.name for run in runs for s in run.specs.values() if s.primary}
    if len(primaries) > 1:
        raise HarnessError(
            f"the runs of task {runs[0].config.task!r} name different primary metrics ({', '.join(sorted(primaries))}): "
            "choose one with --metric"
        )
    chosen = specs[primaries.pop()] if primaries else spec_with_role(specs.values(), "accuracy")
    return chosen or next(iter(specs.values())), specs


def _board(runs: list[Run], metric: str | None, alpha: float, n_boot: int, seed: int) -> Board:
    spec, specs = primary_metric(runs, metric)
    ids = sorted(set.intersection(*(run.ids for run in runs)))
    if any(run.ids != set(ids) for run in runs):
        raise HarnessError(
            f"runs of task {runs[0].config.task!r} on data {runs[0].config.data.fingerprint[:12]} hold different "
            "samples (an unfinished run?); finish them or leave them out"
        )
    columns = np.column_stack([_scores(run, spec.name, ids) for run in runs])
    entries = [Entry(run, metrics=_metrics(run, n_boot, seed)) for run in runs]
    for entry in entries:
        entry.value, low, high = entry.metrics.get(spec.name, (None, None, None))
        entry.ci = (low, high)
    ranked = [e for e in entries if e.value is not None]  # a run without the metric is not ranked
    if ranked:
        best = _best(ranked, spec)
        _versus_best(
            ranked, best, np.column_stack([columns[:, entries.index(e)] for e in ranked]), spec, n_boot, seed
        )
    worse = [e for e in ranked if e.p_holm is not None and e.p_holm < alpha and _worse(e.diff, spec)]
    tied = len(ranked) - len(worse)
    for e in entries:
        e.tied_with_best = e in ranked and e not in worse
        # Competition ranking: the tied share 1; a worse run comes after them and the worse runs
        # strictly better than it (equal values, equal rank).
        better = sum(_sort_value(o.value, spec) < _sort_value(e.value, spec) for o in worse)
        e.rank = None if e not in ranked else 1 if e.tied_with_best else 1 + tied + better
    ordered = sorted(
        entries, key=lambda e: (e.rank is None, e.rank or 0, _sort_value(e.value, spec), _stable_key(e.run))
    )
    data = runs[0].config.data
    return Board(runs[0].config.task, data.source, data.split, data.fingerprint, spec, specs, ordered)


def _scores(run: Run, name: str, ids: list[str]) -> np.ndarray:
    frame = score_frame(run)
    if name not in frame:
        return np.full(len(ids), np.nan)
    return frame[name].reindex(ids).to_numpy(dtype=float)


def _metrics(run: Run, n_boot: int, seed: int) -> dict[str, tuple[float | None, float | None, float | None]]:
    """(value, ci_low, ci_high) of every metric: metrics.json's, or the same bootstrap for an unfinished run."""
    if run.metrics is not None and run.metrics.metrics:
        return {k: (m.value, m.ci_low, m.ci_high) for k, m in run.metrics.metrics.items()}
    return {s.metric: (s.value, s.ci_low, s.ci_high) for s in summarize_run(run, n_boot=n_boot, seed=seed)}


def _sort_value(value: float | None, spec: MetricSpec) -> float:
    """Smaller sorts first: the best value, whatever the metric's direction; no value last."""
    if value is None:
        return float("inf")
    return -value if spec.higher_is_better else value


def _worse(diff: float | None, spec: MetricSpec) -> bool:
    return diff is not None and (diff < 0 if spec.higher_is_better else diff > 0)


def _best(entries: list[Entry], spec: MetricSpec) -> int:
    return min(
        range(len(entries)), key=lambda i: (_sort_value(entries[i].value, spec), _stable_key(entries[i].run))
    )


def _versus_best(
    entries: list[Entry], best: int, columns: np.ndarray, spec: MetricSpec, n_boot: int, seed: int
) -> None:
    """Each run against the best on the samples both scored: difference, its CI, p and Holm's p."""
    others = [i for i in range(len(entries)) if i != best]
    if not others:
        return
    diffs = np.column_stack([columns[:, i] - columns[:, best] for i in others])
    lows, highs = percentile_ci(bootstrap_means(diffs, n_boot=n_boot, seed=seed))
    raw = []
    for j, i in enumerate(others):
        both = ~np.isnan(columns[:, i]) & ~np.isnan(columns[:, best])
        entry = entries[i]
        if not both.any():
            raw.append(1.0)
            continue
        entry.p_value, entry.test, _ = paired_test(spec, columns[both, best], columns[both, i])
        entry.diff = float((columns[both, i] - columns[both, best]).mean())
        entry.diff_ci = (float(lows[j]), float(highs[j]))
        raw.append(entry.p_value)
    for i, p in zip(others, holm(raw), strict=True):
        entries[i].p_holm = p if entries[i].p_value is not None else None


def _row(board: Board, entry: Entry) -> dict:
    c, m = entry.run.config, entry.run.metrics
    records = entry.run.records
    row = {
        "test_set": f"{board.task}/{board.source}/{board.split}/{board.fingerprint[:12]}",
        "rank": entry.rank,
        "tied_with_best": entry.tied_with_best,
        "ranked_by": board.metric.name,
        "model": c.model.name,
        "model_path": c.model.path,
        "revision": c.model.revision or c.model.content or "",
        "adapter": c.model.adapter or "",
        "adapter_content": c.model.adapter_content or "",
        "prompt": c.prompt_name,
        "diff_vs_best": entry.diff,
        "diff_ci_low": entry.diff_ci[0],
        "diff_ci_high": entry.diff_ci[1],
        "p_vs_best": entry.p_value,
        "p_holm": entry.p_holm,
    }
    for name in board.specs:
        value, low, high = entry.metrics.get(name, (None, None, None))
        row.update({name: value, f"{name}_ci_low": low, f"{name}_ci_high": high})
    failures = entry.run.failures
    row.update(errors=failures.errors, not_parsed=failures.not_parsed, truncated=failures.truncated)
    row.update(_costs(records, m))
    row["run_dir"] = str(entry.run.path)
    return row


def _costs(records, metrics) -> dict:
    """Speed: the samples the last session generated over its wall time (a run resumed for its last
    samples is not credited with the earlier sessions' work); tokens and latency: means per sample."""

    def mean(values):
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    return {
        "samples_per_s": _speed(metrics, len(records)),
        "mean_prompt_tokens": mean(r.prompt_tokens for r in records),
        "mean_answer_tokens": mean(r.n_tokens for r in records),
        "mean_latency_s": mean(r.latency_s for r in records),
        "peak_memory_gb": metrics.peak_memory_gb if metrics else None,
    }


def _speed(metrics, n: int) -> float | None:
    if metrics is None or not metrics.wall_s:
        return None
    timed = metrics.timed if metrics.timed is not None else n  # runs written before `timed`
    return timed / metrics.wall_s if timed else None


def histories(board: Board) -> dict[str, list[dict]]:
    """The training histories (metrics by step) of the fine-tunes on the board, by row name."""
    found = {}
    for entry in board.entries:
        adapter = entry.run.config.model.adapter
        manifest = Path(adapter) / TRAIN_MANIFEST_FILE if adapter else None
        if manifest is not None and manifest.is_file():
            history = read_manifest(manifest).metrics.get("history") or []
            if history:
                found[entry.name] = history
    return found


# ---------------------------------------------------------------- markdown


def render(board: Leaderboard, assets: Path) -> tuple[str, list[Path]]:
    """The markdown of every test set's tables, and the plots it shows (written into ``assets``)."""
    lines, plots = ["# Leaderboard", ""], []
    if len(board.boards) > 1:
        lines += [f"{len(board.boards)} test sets: runs of different test sets are never ranked together, each has its own table.", ""]  # fmt: skip
    if board.skipped:
        lines += [f"Left out: {cell('; '.join(board.skipped), 600)}.", ""]
    for b in board.boards:
        lines += _render_board(b, board, assets, plots)
    return "\n".join(lines) + "\n", plots


def _render_board(b: Board, lb: Leaderboard, assets: Path, plots: list[Path]) -> list[str]:
    spec = b.metric
    tied = sum(e.tied_with_best for e in b.entries)
    unranked = [e for e in b.entries if e.rank is None]
    lines = [f"## {cell(b.title)}", ""]
    if any(e.run.config.data.synthetic for e in b.entries):
        lines += [
            "> **Synthetic data.** These numbers check the harness; they say nothing about real catalogs.",
            "",
        ]
    lines += [
        f"Ranked by **{cell(spec.label)}** ({'higher' if spec.higher_is_better else 'lower'} is better). "
        f"Each run is compared with the best on the same samples ({'exact McNemar' if spec.binary else 'Wilcoxon signed-rank'}), "
        f"p-values Holm-corrected across the table; the {tied} run(s) not significantly worse than the best "
        f"(Holm p ≥ {lb.alpha}) share rank 1. 95 % CIs: {lb.n_boot:,} bootstrap resamples of the sample ids, seed {lb.seed}.",
        "",
    ]  # fmt: skip
    if unranked:
        lines += [
            f"Not ranked (no {cell(spec.label)} scored): {cell(', '.join(e.name for e in unranked), 300)}.",
            "",
        ]
    rows = []
    for e in b.entries:
        ci = "" if e.ci[0] is None else f" [{fmt_value(spec, e.ci[0])}, {fmt_value(spec, e.ci[1])}]"
        diff = "best" if e.diff is None and e.p_value is None else f"{fmt_diff(spec, e.diff)} [{fmt_diff(spec, e.diff_ci[0])}, {fmt_diff(spec, e.diff_ci[1])}]"  # fmt: skip
        rows.append([
            _rank(e, tied), cell(e.name, 80), cell(_identity(e), 40),
            cell(e.run.config.prompt_name), f"{fmt_value(spec, e.value)}{ci}", diff, fmt_p(e.p_holm),
        ])  # fmt: skip
    lines += table(
        ["rank", "model", "revision / content", "prompt", cell(spec.label), "vs best", "p (Holm)"], rows
    )
    lines += [""]
    names = [n for n in b.specs if any(n in e.metrics for e in b.entries)]
    lines += ["### Every metric (95 % CI)", ""]
    lines += table(
        ["model", "prompt", *(cell(b.specs[n].label) for n in names)],
        [
            [
                cell(e.name, 60),
                cell(e.run.config.prompt_name),
                *(_with_ci(b.specs[n], e.metrics.get(n)) for n in names),
            ]
            for e in b.entries
        ],  # fmt: skip
    )
    lines += ["", "### Failures and cost", ""]
    cost_rows = []
    for e in b.entries:
        row = _row(b, e)
        cost_rows.append([
            cell(e.name, 60), cell(e.run.config.prompt_name), row["errors"], row["not_parsed"], row["truncated"],
            _num(row["samples_per_s"], ".2f"), _num(row["mean_prompt_tokens"], ".0f"), _num(row["mean_answer_tokens"], ".1f"),
            _num(row["mean_latency_s"], ".3f"), _num(row["peak_memory_gb"], ".2f"),
        ])  # fmt: skip
    lines += table(["model", "prompt", "errors", "not parsed", "truncated", "samples/s", "prompt tokens",
                    "answer tokens", "latency s", "peak GPU GB"], cost_rows)  # fmt: skip
    lines += ["", "samples/s: the samples the run's last session generated over that session's wall time (model loading included); tokens and latency: means per sample.", ""]  # fmt: skip
    slug = f"{b.task}-{b.split}-{b.fingerprint[:8]}".replace("/", "_").replace(":", "_")
    plot = forest_plot(b, assets / f"{slug}-forest.png")
    plots.append(plot)
    lines += [f"![forest plot]({assets.name}/{plot.name})", ""]
    curves = histories(b)
    if curves:
        path = learning_curves(curves, spec, assets / f"{slug}-learning.png")
        if path is not None:
            plots.append(path)
            lines += ["### Learning curves of the fine-tunes (validation slice, during training)", "", f"![learning curves]({assets.name}/{path.name})", ""]  # fmt: skip
    return lines


def _rank(e: Entry, tied: int) -> str:
    if e.rank is None:
        return "– (no value)"
    return f"{e.rank}{' (tied)' if e.tied_with_best and tied > 1 else ''}"


def _identity(e: Entry) -> str:
    m = e.run.config.model
    ident = (m.revision or m.content or "–")[:12]
    return ident + (f" + {m.adapter_content[:8]}" if m.adapter_content else "")


def _with_ci(spec: MetricSpec, value) -> str:
    if not value or value[0] is None:
        return "–"
    v, low, high = value
    return fmt_value(spec, v) + ("" if low is None else f" [{fmt_value(spec, low)}, {fmt_value(spec, high)}]")


def _num(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


# ---------------------------------------------------------------- finding runs


def collect(
    paths: list[Path] | None,
    *,
    task: str | None,
    data: str | None = None,
    output_dir: Path = Path("runs"),
    allow_incomplete: bool = False,
) -> tuple[list[Run], list[str]]:
    """The runs to rank, and the ones left out with why.

    Named run directories must be usable: an unfinished or incomplete one is refused unless
    ``allow_incomplete``, as `harness report` refuses it. With none named, every run of ``task``
    (and ``data``) under ``output_dir``; the unusable ones are left out and listed.
    """
    if paths:
        runs = [read_run(p) for p in paths]
        if not allow_incomplete:
            for run in runs:
                if (reason := why_incomplete(run)) is not None:
                    raise HarnessError(f"{run.path}: {reason}; rank it anyway with --allow-incomplete")
        return runs, []
    runs, skipped = [], []
    for path in run_dirs(output_dir):
        try:
            run = read_run(path)
        except HarnessError as err:
            skipped.append(f"{path.name}: {err}")
            continue
        if (task and run.config.task != task) or (data and run.config.data.source != data):
            continue
        reason = why_incomplete(run)
        if reason and not allow_incomplete:
            skipped.append(f"{path.name}: {reason}")
        else:
            runs.append(run)
    if not runs:
        raise HarnessError(f"no finished run{f' of task {task!r}' if task else ''} under {output_dir}")
    return runs, skipped
