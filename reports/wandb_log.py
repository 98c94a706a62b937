"""``--wandb``: the report as a W&B run (project "harness", job_type "report").

wandb is imported lazily (it is an optional extra). Without WANDB_API_KEY the run is offline, so a
report never waits on the network; `wandb sync` uploads it later. Every table column holds one type
(str or float, never None): W&B tables reject a column whose type changes between rows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from PIL import Image, UnidentifiedImageError

from harness.core.run import Run
from reports.paired import MetricSummary

if TYPE_CHECKING:
    from reports.compare import Comparison


def _float(value) -> float:
    return float("nan") if value is None else float(value)


def _str(value) -> str:
    return "" if value is None else str(value)


def log_report(
    runs: dict[str, Run],
    *,
    comparison: Comparison | None,
    summary: list[MetricSummary] | None,
    per_group: dict[str, pd.DataFrame],
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
        log = {"summary": _summary_table(wandb, comparison, summary)}
        log.update({f"per_{field}": _group_table(wandb, field, t) for field, t in per_group.items()})
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


def _group_table(wandb, field: str, table: pd.DataFrame):
    columns = [field, *table.columns]
    rows = [[str(label), *(_float(v) for v in values)] for label, values in table.iterrows()]
    return wandb.Table(columns=columns, data=rows)


def _sample_table(wandb, runs: dict[str, Run], max_samples: int):
    """The first ``max_samples`` shared ids: image, truth and every run's output, parsed values and
    per-field scores (one column type each: numbers as float, text as str)."""
    by_label = {label: {r.id: r for r in run.records} for label, run in runs.items()}
    first = next(iter(runs.values()))
    fields = first.fields
    scores = [name for name, spec in first.specs.items() if spec.field and not spec.binary]
    ids = [r.id for r in first.records if all(r.id in recs for recs in by_label.values())][:max_samples]

    def value(field, v):
        return _float(v) if field.numeric else _str(v)

    columns = ["id", "image", *(f"true_{f.name}" for f in fields)]
    for label in runs:
        columns += [
            f"{label}_output",
            *(f"{label}_{f.name}" for f in fields),
            *(f"{label}_{m}" for m in scores),
        ]
        columns.append(f"{label}_error")
    rows = []
    for i in ids:
        truth = by_label[next(iter(runs))][i]
        row = [i, _image(wandb, truth.image), *(value(f, truth.truth.get(f.name)) for f in fields)]
        for recs in by_label.values():
            r = recs[i]
            row += [_str(r.output), *(value(f, r.parsed.get(f.name)) for f in fields)]
            row += [_float(r.scores.get(m)) for m in scores] + [_str(r.error)]
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


def log_leaderboard(frame: pd.DataFrame, plots: list[Path], markdown: Path) -> Path:
    """The leaderboard's table and plots as a W&B run (job_type "leaderboard"); its files directory."""
    import wandb

    mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    run = wandb.init(
        project="harness", job_type="leaderboard", name=markdown.stem, mode=mode, reinit="finish_previous"
    )
    try:
        columns = list(frame.columns)
        rows = [[_str(v) if isinstance(v, str) or v is None else _float(v) for v in row] for row in frame.itertuples(index=False)]  # fmt: skip
        log = {"leaderboard": wandb.Table(columns=columns, data=rows)}
        log.update({f"plots/{p.stem}": wandb.Image(str(p)) for p in plots})
        run.log(log)
        run.save(str(markdown), base_path=str(markdown.parent), policy="now")
        return Path(run.dir)
    finally:
        run.finish()
