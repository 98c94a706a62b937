"""Report figures as PNG files (matplotlib, Agg backend: no display needed), named after the task's fields.

For each numeric field: ``<field>_scatter.png`` (true vs predicted) and, when the task scores its
absolute percentage error, ``<field>_ape_cdf.png``. For each label field: ``<field>_accuracy.png``.
Every file is written atomically (rendered to memory, then temp file + rename).
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from harness.core.schema import FieldInfo  # noqa: E402
from harness.core.store import write_atomic  # noqa: E402
from reports.compare import Run  # noqa: E402


def make_plots(runs: dict[str, Run], per_group: dict[str, pd.DataFrame], out_dir: Path) -> list[Path]:
    """Write the figures of every field into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    first = next(iter(runs.values()))
    paths = []
    for field in (f for f in first.fields if f.numeric):
        paths.append(_save(_scatter(runs, field), out_dir / f"{field.name}_scatter.png"))
        if f"{field.name}_ape" in first.specs:
            paths.append(_save(_ape_cdf(runs, field), out_dir / f"{field.name}_ape_cdf.png"))
    for field in (f for f in first.fields if f.categorical):
        if field.name in per_group and f"{field.name}_exact" in first.specs:
            paths.append(_save(_accuracy_bars(runs, field, per_group[field.name]), out_dir / f"{field.name}_accuracy.png"))  # fmt: skip
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


def _ape_cdf(runs: dict[str, Run], field: FieldInfo):
    key = f"{field.name}_ape"
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
    ax.set_xlabel(f"absolute percentage error of the {field.name} (%)")
    ax.set_ylabel("share of samples with APE ≤ x")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    return fig


def _accuracy_bars(runs: dict[str, Run], field: FieldInfo, table: pd.DataFrame):
    labels = [str(c) for c in table.index]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(labels) + 2), 4.5))
    x = np.arange(len(labels))
    width = 0.8 / len(runs)
    for i, (label, run) in enumerate(runs.items()):
        column = f"{field.name}_exact {label}"
        if column in table:
            ax.bar(x + i * width, table[column].to_numpy(), width, label=f"{label}: {run.label}")
    ax.set_xticks(x + width * (len(runs) - 1) / 2, labels, rotation=45, ha="right")
    ax.set_ylabel(f"{field.name} accuracy")
    ax.set_ylim(0, 1)
    ax.legend()
    return fig
