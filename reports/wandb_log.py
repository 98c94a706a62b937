"""``--wandb``: the report as a W&B run (project "harness", job_type "report").

wandb is imported lazily (it is an optional extra). Without WANDB_API_KEY the run is offline, so a
report never waits on the network; `wandb sync` uploads it later. Every table column holds one type
(str or float, never None): W&B tables reject a column whose type changes between rows.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError

from reports.compare import Comparison, MetricSummary, Run


def _float(value) -> float:
    return float("nan") if value is None else float(value)


def _str(value) -> str:
    return "" if value is None else str(value)


def log_report(
    runs: dict[str, Run],
    *,
    comparison: Comparison | None,
    summary: list[MetricSummary] | None,
    per_cat: pd.DataFrame,
    plots: list[Path],
    markdown: Path,
    max_samples: int = 100,
) -> Path:
    """Log the report's tables, sample images and plots; return the W&B run's files directory."""
    import wandb

    mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    config = {
        f"{label}/{key}": value
        for label, run in runs.items()
        for key, value in {
            "run_dir": str(run.path), "model": run.config.model.name, "model_path": run.config.model.path,
            "revision": _str(run.config.model.revision), "adapter": _str(run.config.model.adapter),
            "data_source": run.config.data.source, "fingerprint": run.config.data.fingerprint,
            "synthetic": run.config.data.synthetic, "n": len(run.records),
        }.items()
    }  # fmt: skip
    name = " vs ".join(run.label for run in runs.values())
    run = wandb.init(
        project="harness", job_type="report", name=name, mode=mode, config=config, reinit="finish_previous"
    )
    try:
        log = {
            "summary": _summary_table(wandb, comparison, summary),
            "per_category": _category_table(wandb, per_cat),
        }
        log["samples"] = _sample_table(wandb, runs, max_samples)
        log.update({f"plots/{p.stem}": wandb.Image(str(p)) for p in plots})
        run.log(log)
        if comparison is not None:
            for m in comparison.metrics:
                run.summary[f"diff/{m.metric}"] = _float(m.diff)
                run.summary[f"worse/{m.metric}"] = m.worse
        run.save(str(markdown), base_path=str(markdown.parent), policy="now")
        return Path(run.dir)
    finally:
        run.finish()


def _summary_table(wandb, comparison: Comparison | None, summary: list[MetricSummary] | None):
    if comparison is not None:
        columns = ["metric", "n", "A", "B", "diff", "ci_low", "ci_high", "p_value", "test", "verdict"]
        rows = [
            [m.metric, float(m.n), _float(m.a), _float(m.b), _float(m.diff), _float(m.ci_low), _float(m.ci_high),
             _float(m.p_value), m.test, "worse" if m.worse else ("better" if m.better else "")]
            for m in comparison.metrics
        ]  # fmt: skip
    else:
        columns = ["metric", "n", "value", "ci_low", "ci_high"]
        rows = [
            [s.metric, float(s.n), _float(s.value), _float(s.ci_low), _float(s.ci_high)]
            for s in summary or []
        ]
    return wandb.Table(columns=columns, data=rows)


def _category_table(wandb, per_cat: pd.DataFrame):
    columns = ["category", *per_cat.columns]
    rows = [[str(category), *(_float(v) for v in values)] for category, values in per_cat.iterrows()]
    return wandb.Table(columns=columns, data=rows)


def _sample_table(wandb, runs: dict[str, Run], max_samples: int):
    """The first ``max_samples`` shared ids: image, truth and every run's output and scores."""
    by_label = {label: {r.id: r for r in run.records} for label, run in runs.items()}
    first = next(iter(runs.values()))
    ids = [r.id for r in first.records if all(r.id in recs for recs in by_label.values())][:max_samples]
    columns = ["id", "image", "true_name", "true_category", "true_price"]
    for label in runs:
        columns += [
            f"{label}_output",
            f"{label}_price",
            f"{label}_name_similarity",
            f"{label}_price_ape",
            f"{label}_error",
        ]
    rows = []
    for i in ids:
        truth = by_label[next(iter(runs))][i]
        row = [
            i,
            _image(wandb, truth.image),
            truth.truth.name,
            truth.truth.category,
            float(truth.truth.price),
        ]
        for recs in by_label.values():
            r = recs[i]
            row += [_str(r.output), _float(r.parsed.price), _float(r.scores.get("name_similarity")),
                    _float(r.scores.get("price_ape")), _str(r.error)]  # fmt: skip
        rows.append(row)
    return wandb.Table(columns=columns, data=rows)


def _image(wandb, path: str):
    """wandb.Image of the file; a grey placeholder when it is unreadable (a column keeps one type)."""
    try:
        with Image.open(path) as img:
            img.thumbnail((256, 256))
            return wandb.Image(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError):
        return wandb.Image(Image.new("RGB", (32, 32), "grey"), caption="image unavailable")
