"""The markdown report: what was compared, paired statistics, per-label results, examples.

Every metric, field and label shown comes from the runs' own specs and field list: nothing here
names a catalog's fields. The one-run and the two-run report live together: they share their
escaping and sections, which keeps every cell going through one escaper.

Model output is hostile text: every cell goes through :func:`cell`, which HTML-escapes it, turns
markdown-active characters into numeric entities (so `|` cannot split a table row and `[x](y)`
cannot become a link) and collapses newlines, so a row always keeps its column count.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from harness.core.run import Run, not_parsed
from harness.core.schema import FieldInfo, MetricSpec, spec_with_role
from harness.core.stats import N_BOOT, SEED
from harness.core.store import write_atomic
from reports.paired import MetricSummary

if TYPE_CHECKING:
    from reports.compare import Comparison

THUMB_PX = 128
# HTML specials plus markdown syntax that could split a row or render (links, images, code, emphasis).
_ESCAPES = str.maketrans({c: f"&#{ord(c)};" for c in "&<>\"'|`[]*_~\\!#"})


def cell(text: object, limit: int = 200) -> str:
    """One table cell's worth of inert text: escaped, single line, at most ``limit`` characters."""
    value = "" if text is None else re.sub(r"\s+", " ", str(text)).strip()
    if len(value) > limit:
        value = value[: limit - 1] + "…"
    return value.translate(_ESCAPES)


def row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table(header: list[str], rows: list[list[object]]) -> list[str]:
    return [row(*header), row(*["---"] * len(header)), *(row(*r) for r in rows)]


def fmt_value(spec: MetricSpec, value: float | None) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if spec.percent:
        return f"{100 * value:.1f} %"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def fmt_diff(spec: MetricSpec, value: float | None) -> str:
    if value is None or np.isnan(value):
        return "–"
    return f"{100 * value:+.1f} pp" if spec.percent else f"{value:+.3g}"


def fmt_p(p: float | None) -> str:
    return "–" if p is None else ("< 0.0001" if p < 1e-4 else f"{p:.4f}")


def thumbnail(image: str, assets: Path) -> str | None:
    """A small PNG copy of ``image`` in ``assets``; its path relative to the report, or None if unreadable."""
    name = hashlib.sha1(image.encode()).hexdigest()[:16] + ".png"
    target = assets / name
    if not target.exists():
        try:
            with Image.open(image) as img:
                img = img.convert("RGB")
                img.thumbnail((THUMB_PX, THUMB_PX))
                buf = io.BytesIO()
                img.save(buf, format="PNG")
        except (OSError, UnidentifiedImageError, ValueError):
            return None
        assets.mkdir(parents=True, exist_ok=True)
        write_atomic(target, buf.getvalue())
    return f"{assets.name}/{name}"


def _image_cell(record, assets: Path) -> str:
    rel = thumbnail(record.image, assets)
    return f"![{cell(record.id, 60)}]({rel})" if rel else "(no image)"


def _value(value) -> str:
    if value is None:
        return "–"
    return f"{value:g}" if isinstance(value, float) else cell(value, 60)


def _truth(record, fields: list[FieldInfo]) -> str:
    return " · ".join(_value(record.truth.get(f.name)) for f in fields)


def _output(record, fields: list[FieldInfo]) -> str:
    if record.error is not None:
        return f"**error:** {cell(record.error, 120)}"
    parsed = " · ".join(_value(record.parsed.get(f.name)) for f in fields)
    return f"{cell(record.output, 160)}<br>*parsed:* {parsed}"


def _provenance(runs: dict[str, Run]) -> list[str]:
    def info(run: Run) -> dict[str, str]:
        c, d = run.config, run.config.data
        versions = ", ".join(f"{k} {v}" for k, v in sorted(c.versions.items())) or "–"
        return {
            "run directory": cell(str(run.path)),
            "task (source)": cell(f"{c.task} ({c.task_source or '–'})"),
            "prompt": cell(c.prompt_name),
            "model": cell(c.model.name),
            "model path": cell(c.model.path),
            "revision": cell(c.model.revision or "–"),
            "adapter": cell(c.model.adapter or "–"),
            "data": cell(f"{d.source} / {d.split}" + (" (SYNTHETIC)" if d.synthetic else "")),
            "fingerprint": cell(d.fingerprint),
            "samples (records / split / excluded)": f"{len(run.records)} / {d.n_samples} / {d.n_excluded}",
            "created": cell(c.created or "–"),
            "device / dtype": cell(f"{c.device} / {c.dtype}"),
            "git": cell(c.git_sha or "–"),
            "versions": cell(versions, 400),
        }

    infos = {label: info(run) for label, run in runs.items()}
    keys = list(next(iter(infos.values())))
    return table(["", *runs], [[k, *(infos[label][k] for label in runs)] for k in keys])


def _counts(runs: dict[str, Run]) -> list[str]:
    """How many samples failed and how: the counts behind the rates, as the runs counted them."""
    failures = [run.failures for run in runs.values()]
    rows = [
        ["errors (scored as wrong)", *(f.errors for f in failures)],
        ["answered, not every field read", *(f.not_parsed for f in failures)],
        ["truncated at max_new_tokens", *(f.truncated for f in failures)],
        ["torn last line dropped", *("yes" if r.torn_last_line else "no" for r in runs.values())],
    ]
    return table(["", *runs], rows)


def _per_group(tables: dict[str, pd.DataFrame], specs: dict[str, MetricSpec]) -> list[str]:
    """One section per label field: the task's per-label metrics for each true label."""
    lines = []
    for field, per_label in tables.items():
        header = [cell(field), *(_cat_header(c, specs) for c in per_label.columns)]
        rows = [
            [cell(label, 60), *(_cat_value(c, v, specs) for c, v in values.items())]
            for label, values in per_label.iterrows()
        ]
        lines += [f"## Per {cell(field)}", "", *table(header, rows), ""]
    return lines


def example_metrics(specs: dict[str, MetricSpec], fields: list[FieldInfo]) -> list[str]:
    """The continuous per-field metrics worth showing examples of: relative errors, then similarities."""
    chosen = [
        spec_with_role(specs.values(), role, f.name)
        for role in ("relative_error", "similarity")
        for f in fields
    ]
    return [spec.name for spec in chosen if spec is not None]


def _cat_header(column: str, specs: dict[str, MetricSpec]) -> str:
    if column == "n":
        return "n"
    metric, label = column.split(" ", 1)
    return cell(f"{specs[metric].label} ({label})")


def _cat_value(column: str, value, specs: dict[str, MetricSpec]) -> str:
    if column == "n":
        return str(int(value))
    return fmt_value(specs[column.split(" ")[0]], float(value))


def _changes(cmp: Comparison, metric: str, k: int) -> tuple[list[str], list[str]]:
    """Sample ids with the biggest improvement and the biggest regression of B over A on ``metric``."""
    delta = (cmp.paired[f"{metric}_b"] - cmp.paired[f"{metric}_a"]).dropna()
    if not cmp.specs[metric].higher_is_better:
        delta = -delta
    wins = delta[delta > 0].sort_values(ascending=False, kind="stable").index[:k]
    losses = delta[delta < 0].sort_values(kind="stable").index[:k]
    return list(wins), list(losses)


def _examples(cmp: Comparison, ids: list[str], metric: str, assets: Path) -> list[str]:
    ra = {r.id: r for r in cmp.a.records}
    rb = {r.id: r for r in cmp.b.records}
    spec = cmp.specs[metric]
    fields = cmp.a.fields
    rows = []
    for i in ids:
        a, b = ra[i], rb[i]
        rows.append([
            _image_cell(a, assets), cell(i, 40), _truth(a, fields), _output(a, fields), _output(b, fields),
            f"{fmt_value(spec, cmp.paired.at[i, f'{metric}_a'])} → {fmt_value(spec, cmp.paired.at[i, f'{metric}_b'])}",
        ])  # fmt: skip
    return table(["image", "id", "truth", "A output", "B output", cell(spec.label)], rows)


def render_comparison(
    cmp: Comparison,
    per_group: dict[str, pd.DataFrame],
    plots: list[str],
    assets: Path,
    *,
    alpha: float,
    k: int = 5,
) -> str:
    a, b = cmp.a, cmp.b
    lines = [f"# {cell(a.label)} (A) vs {cell(b.label)} (B) — {cell(a.config.task)}", ""]
    lines += _banner([a, b])
    if a.config.prompt_name != b.config.prompt_name or a.config.prompt != b.config.prompt:
        lines += [
            f"> **Different prompts:** A was asked with *{cell(a.config.prompt_name)}*, B with "
            f"*{cell(b.config.prompt_name)}*: this compares the prompts as well as the models.",
            "",
        ]
    lines += ["## What was compared", "", *_provenance({"A": a, "B": b}), ""]
    lines += [
        "## Summary",
        "",
        f"Paired by sample id over {len(cmp.paired)} samples. Difference = B − A; 95 % CI from a paired "
        f"bootstrap ({_n_boot_note(cmp.n_boot, cmp.seed)}); p: exact McNemar for 0/1 metrics, Wilcoxon signed-rank otherwise. "
        f"▲/▼ = B significantly better/worse (CI excludes 0 on that side and p < {alpha}). "
        "Errored samples count as wrong; error metrics (↓) use the pairs where both runs read a value (n).",
        "",
    ]
    rows = []
    specs = cmp.specs
    for m in cmp.metrics:
        spec = specs[m.metric]
        verdict = "▼ worse" if m.worse else ("▲ better" if m.better else "")
        ci = "–" if m.ci_low is None else f"[{fmt_diff(spec, m.ci_low)}, {fmt_diff(spec, m.ci_high)}]"
        direction = "↑" if spec.higher_is_better else "↓"
        rows.append([
            f"{cell(spec.label)} {direction}", m.n, fmt_value(spec, m.a), fmt_value(spec, m.b),
            fmt_diff(spec, m.diff), ci, fmt_p(m.p_value), m.test, verdict,
        ])  # fmt: skip
    lines += table(["metric", "n", "A", "B", "B − A", "95 % CI", "p", "test", ""], rows) + [""]
    if cmp.left_out:
        left = ", ".join(
            f"{cell(specs[m].label if m in specs else m)} ({why})" for m, why in cmp.left_out.items()
        )
        lines += [f"Not compared (scored by one run only): {left}.", ""]
    lines += ["## Failures", "", *_counts({"A": a, "B": b}), ""]
    lines += _per_group(per_group, specs)
    lines += _plots(plots)
    for metric in example_metrics(specs, a.fields):
        if metric not in cmp.by_name() or cmp.by_name()[metric].n == 0:
            continue
        wins, losses = _changes(cmp, metric, k)
        label = specs[metric].label
        for title, ids in (
            (f"Biggest wins of B ({label})", wins),
            (f"Biggest losses of B ({label})", losses),
        ):
            lines += [f"## {title}", ""]
            lines += _examples(cmp, ids, metric, assets) if ids else ["None."]
            lines += [""]
    lines += [_footer()]
    return "\n".join(lines) + "\n"


def render_single(
    run: Run,
    summary: list[MetricSummary],
    per_group: dict[str, pd.DataFrame],
    plots: list[str],
    assets: Path,
    *,
    k: int = 5,
    n_boot: int = N_BOOT,
    seed: int = SEED,
) -> str:
    lines = [f"# {cell(run.label)} — {cell(run.config.task)}", ""]
    lines += _banner([run])
    lines += ["## What was evaluated", "", *_provenance({"run": run}), ""]
    lines += ["## Summary", "", f"Means with 95 % bootstrap CIs ({_n_boot_note(n_boot, seed)}).", ""]
    specs = run.specs
    rows = [
        [cell(specs[s.metric].label), s.n, fmt_value(specs[s.metric], s.value),
         f"[{fmt_value(specs[s.metric], s.ci_low)}, {fmt_value(specs[s.metric], s.ci_high)}]"]
        for s in summary
    ]  # fmt: skip
    lines += table(["metric", "n", "value", "95 % CI"], rows) + [""]
    lines += ["## Failures", "", *_counts({"run": run}), ""]
    lines += _per_group(per_group, specs)
    lines += _plots(plots)
    fields = run.fields
    worst_by = next(iter(example_metrics(specs, fields)), None)
    rows = []
    if worst_by is not None:
        spec = specs[worst_by]
        worst = sorted(
            (r for r in run.records if r.scores.get(worst_by) is not None),
            key=lambda r: r.scores[worst_by] if spec.higher_is_better else -r.scores[worst_by],
        )[:k]
        rows = [
            [_image_cell(r, assets), cell(r.id, 40), _truth(r, fields), _output(r, fields), fmt_value(spec, r.scores[worst_by])]
            for r in worst
        ]  # fmt: skip
    parse_rate = spec_with_role(specs.values(), "parse_rate")
    failed = [r for r in run.records if not_parsed(r, parse_rate)][:k]
    rows += [
        [_image_cell(r, assets), cell(r.id, 40), _truth(r, fields), _output(r, fields), "–"] for r in failed
    ]
    title = cell(specs[worst_by].label) if worst_by else "score"
    lines += [f"## Worst by {title}, and failures", ""]
    lines += (table(["image", "id", "truth", "output", title], rows) if rows else ["None."]) + [""]
    lines += [_footer()]
    return "\n".join(lines) + "\n"


def _banner(runs: list[Run]) -> list[str]:
    out = []
    if any(r.config.data.synthetic for r in runs):
        out += [
            "> **Synthetic data.** These numbers check the harness; they say nothing about real catalogs.",
            "",
        ]
    for r in runs:
        if r.metrics is None or r.metrics.status != "complete":
            why = "unfinished" if r.metrics is None else f"incomplete: {r.metrics.reason}"
            out += [
                f"> **{cell(r.label)} is {cell(why)}.** Its numbers are not final (reported with --allow-incomplete).",
                "",
            ]
    return out


def _plots(plots: list[str]) -> list[str]:
    if not plots:
        return []
    return ["## Plots", "", *(f"![{Path(p).stem}]({p})" for p in plots), ""]


def _n_boot_note(n_boot: int, seed: int) -> str:
    return f"{n_boot:,} resamples of the sample ids, seed {seed}"


def _footer() -> str:
    return f"*Report generated {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}.*"
