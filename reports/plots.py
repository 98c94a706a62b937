"""Report figures as PNG files (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from reports.compare import Run  # noqa: E402


def make_plots(runs: dict[str, Run], per_cat: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write price_scatter.png, ape_cdf.png and category_accuracy.png into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        _save(_price_scatter(runs), out_dir / "price_scatter.png"),
        _save(_ape_cdf(runs), out_dir / "ape_cdf.png"),
        _save(_category_bars(runs, per_cat), out_dir / "category_accuracy.png"),
    ]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _price_scatter(runs: dict[str, Run]):
    fig, axes = plt.subplots(
        1, len(runs), figsize=(5 * len(runs), 4.5), squeeze=False, sharex=True, sharey=True
    )
    for ax, (label, run) in zip(axes[0], runs.items(), strict=True):
        pairs = np.array(
            [
                (r.truth.price, r.parsed.price)
                for r in run.records
                if r.parsed.price is not None and r.error is None
            ],
            dtype=float,
        ).reshape(-1, 2)
        pairs = pairs[(pairs > 0).all(axis=1)]  # a log axis cannot show 0 or negative prices
        ax.set_title(f"{label}: {run.label} ({len(pairs)} prices)")
        ax.set_xlabel("true price")
        ax.set_ylabel("predicted price")
        if len(pairs):
            ax.scatter(pairs[:, 0], pairs[:, 1], s=12, alpha=0.6)
            lo, hi = pairs.min() / 1.5, pairs.max() * 1.5
            ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="exact")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on short log ranges
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.legend(loc="upper left")
        else:
            ax.text(0.5, 0.5, "no price parsed", ha="center", va="center", transform=ax.transAxes)
    return fig


def _ape_cdf(runs: dict[str, Run]):
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, run in runs.items():
        ape = 100 * np.sort(
            [r.scores["price_ape"] for r in run.records if r.scores.get("price_ape") is not None]
        )
        if len(ape):
            # the share of all records (not just parsed ones) within x: a missing price never counts as close
            ax.step(
                ape,
                np.arange(1, len(ape) + 1) / len(run.records),
                where="post",
                label=f"{label}: {run.label}",
            )
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("absolute percentage error of the price (%)")
    ax.set_ylabel("share of samples with APE ≤ x")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    return fig


def _category_bars(runs: dict[str, Run], per_cat: pd.DataFrame):
    categories = [str(c) for c in per_cat.index]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(categories) + 2), 4.5))
    x = np.arange(len(categories))
    width = 0.8 / len(runs)
    for i, (label, run) in enumerate(runs.items()):
        ax.bar(
            x + i * width, per_cat[f"category_exact {label}"].to_numpy(), width, label=f"{label}: {run.label}"
        )
    ax.set_xticks(x + width * (len(runs) - 1) / 2, categories, rotation=45, ha="right")
    ax.set_ylabel("category accuracy")
    ax.set_ylim(0, 1)
    ax.legend()
    return fig
