"""Report figures as PNG files (matplotlib, Agg backend: no display needed), named after the task's fields.

For each numeric field: ``<field>_scatter.png`` (true vs predicted) and, when the task scores a
relative error of it, ``<field>_<metric>_cdf.png``. For each label field: ``<field>_accuracy.png``.
Metrics are chosen by their role (the run's metric specs), never by name.
Every file is written atomically (rendered to memory, then temp file + rename).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from harness.core.run import Run  # noqa: E402
from harness.core.schema import FieldInfo, MetricSpec, spec_with_role  # noqa: E402
from harness.core.store import write_atomic  # noqa: E402

if TYPE_CHECKING:
    from reports.leaderboard import Board


def make_plots(runs: dict[str, Run], per_group: dict[str, pd.DataFrame], out_dir: Path) -> list[Path]:
    """Write the figures of every field into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    first = next(iter(runs.values()))
    paths = []
    specs = list(first.specs.values())
    for field in (f for f in first.fields if f.numeric):
        paths.append(_save(_scatter(runs, field), out_dir / f"{field.name}_scatter.png"))
        if (relative := spec_with_role(specs, "relative_error", field.name)) is not None:
            paths.append(_save(_error_cdf(runs, field, relative), out_dir / f"{relative.name}_cdf.png"))
    for field in (f for f in first.fields if f.categorical):
        accuracy = spec_with_role(specs, "accuracy", field.name)
        if field.name in per_group and accuracy is not None:
            figure = _accuracy_bars(runs, field, accuracy, per_group[field.name])
            paths.append(_save(figure, out_dir / f"{field.name}_accuracy.png"))
    return paths


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_atomic(path, buf.getvalue())
    return path


def _scatter(runs: dict[str, Run], field: FieldInfo):
    fig, axes = plt.subplots(
        1, len(runs), figsize=(5 * len(runs), 4.5), squeeze=False, sharex=True, sharey=True
    )
    unit = f" ({field.unit})" if field.unit else ""
    for ax, (label, run) in zip(axes[0], runs.items(), strict=True):
        pairs = np.array(
            [
                (r.truth[field.name], r.parsed.get(field.name))
                for r in run.records
                if r.parsed.get(field.name) is not None and r.error is None
            ],
            dtype=float,
        ).reshape(-1, 2)
        positive = pairs[(pairs > 0).all(axis=1)]
        log = len(positive) == len(pairs) and len(pairs) > 0  # a log axis cannot show 0 or negatives
        pairs = positive if log else pairs
        ax.set_title(f"{label}: {run.label} ({len(pairs)} values)")
        ax.set_xlabel(f"true {field.name}{unit}")
        ax.set_ylabel(f"predicted {field.name}{unit}")
        if len(pairs):
            ax.scatter(pairs[:, 0], pairs[:, 1], s=12, alpha=0.6)
            lo, hi = pairs.min(), pairs.max()
            lo, hi = (lo / 1.5, hi * 1.5) if log else (lo - 0.1 * abs(lo) - 1, hi + 0.1 * abs(hi) + 1)
            ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="exact")
            if log:
                ax.set_xscale("log")
                ax.set_yscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on short log ranges
                ax.yaxis.set_minor_formatter(NullFormatter())
            ax.legend(loc="upper left")
        else:
            ax.text(0.5, 0.5, f"no {field.name} parsed", ha="center", va="center", transform=ax.transAxes)
    return fig


def _error_cdf(runs: dict[str, Run], field: FieldInfo, spec: MetricSpec):
    key = spec.name
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, run in runs.items():
        ape = 100 * np.sort([r.scores[key] for r in run.records if r.scores.get(key) is not None])
        if len(ape):
            # the share of all records (not just parsed ones) within x: a missing value never counts as close
            ax.step(
                ape,
                np.arange(1, len(ape) + 1) / len(run.records),
                where="post",
                label=f"{label}: {run.label}",
            )
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel(f"{spec.label} (%)")
    ax.set_ylabel("share of samples with an error ≤ x")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    return fig


def _accuracy_bars(runs: dict[str, Run], field: FieldInfo, spec: MetricSpec, table: pd.DataFrame):
    labels = [str(c) for c in table.index]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(labels) + 2), 4.5))
    x = np.arange(len(labels))
    width = 0.8 / len(runs)
    for i, (label, run) in enumerate(runs.items()):
        column = f"{spec.name} {label}"
        if column in table:
            ax.bar(x + i * width, table[column].to_numpy(), width, label=f"{label}: {run.label}")
    ax.set_xticks(x + width * (len(runs) - 1) / 2, labels, rotation=45, ha="right")
    ax.set_ylabel(spec.label)
    ax.set_ylim(0, 1)
    ax.legend()
    return fig


def forest_plot(board: Board, path: Path) -> Path:
    """The ranking metric of every run on one test set, with its 95 % CI, best first; the runs that
    share rank 1 in one colour, the runs significantly worse than the best in another."""
    spec = board.metric
    entries = board.entries
    fig, ax = plt.subplots(figsize=(7, 1.0 + 0.45 * len(entries)))
    scale = 100 if spec.percent else 1
    for y, entry in enumerate(reversed(entries)):
        if entry.value is None:
            continue
        low, high = (entry.ci[0] if entry.ci[0] is not None else entry.value), (entry.ci[1] if entry.ci[1] is not None else entry.value)  # fmt: skip
        color = "tab:blue" if entry.tied_with_best else "tab:gray"
        ax.errorbar(
            scale * entry.value, y, xerr=[[scale * (entry.value - low)], [scale * (high - entry.value)]],
            fmt="o", color=color, capsize=3,
        )  # fmt: skip
    labels = [f"{e.rank or '–'}. {e.name} [{e.run.config.prompt_name}]" for e in reversed(entries)]
    ax.set_yticks(range(len(entries)), labels)
    ax.set_xlabel(f"{spec.label}{' (%)' if spec.percent else ''}, 95 % CI")
    ax.set_title("blue: not significantly worse than the best (rank 1)", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def learning_curves(histories: dict[str, list[dict]], spec: MetricSpec, path: Path) -> Path | None:
    """``spec``'s metric against the training step for each fine-tune (the training callback's
    validation slice); None when no history records it."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    drawn = False
    for name, history in histories.items():
        points = [(h["step"], h[spec.name]) for h in history if h.get(spec.name) is not None and "step" in h]
        if points:
            steps, values = zip(*sorted(points), strict=True)
            ax.plot(steps, [100 * v if spec.percent else v for v in values], marker="o", label=name)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"{spec.label}{' (%)' if spec.percent else ''}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
