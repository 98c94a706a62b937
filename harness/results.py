"""A run's results: the metrics of its records (summarise), re-scoring a finished run with the
task's current parser and scorers, and the table `harness run` prints."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from harness.core.run import Failures
from harness.core.schema import ModelInfo, Record, RunMetrics
from harness.core.store import RunStore, latest
from tasks.base import Task, TaskData


def rescore(task: Task, store: RunStore, data: TaskData, old: RunMetrics) -> RunMetrics:
    """Re-parse and re-score a finished run's outputs with the task's current parser and scorers.

    The outputs do not depend on the parser, so nothing is generated again; predictions.jsonl and
    metrics.json are rewritten atomically.
    """
    by_id = latest(store.records())
    ordered = [by_id[s.id] for s in data.samples if s.id in by_id]
    parsed = [task.parse(r.output) if r.error is None and r.output is not None else {} for r in ordered]
    scores = task.score([r.truth for r in ordered], parsed)
    fresh = [
        r.model_copy(update={"parsed": p, "scores": s})
        for r, p, s in zip(ordered, parsed, scores, strict=True)
    ]
    store.replace_records(fresh)
    config = store.read_config()
    metrics = summarise(
        task, config.model, data, fresh, old.wall_s or 0.0, config.max_error_rate, old.batch_size
    )
    metrics.timed, metrics.peak_memory_gb = old.timed, old.peak_memory_gb  # the same generation
    store.finish(metrics)
    return metrics


def summarise(
    task: Task,
    info: ModelInfo,
    data: TaskData,
    records: list[Record],
    wall_s: float,
    max_error_rate: float,
    batch_size: int | None = None,
) -> RunMetrics:
    """Aggregate the latest record of each of this split's samples, in sample order."""
    by_id = latest(records)
    ordered = [by_id[s.id] for s in data.samples if s.id in by_id]
    values, per_group = task.aggregate(ordered)
    failures = Failures.of(ordered, task.metric_specs())
    n_errors = failures.errors
    reason = None
    if len(ordered) < len(data.samples):
        reason = f"{len(data.samples) - len(ordered)} of {len(data.samples)} samples have no record"
    elif ordered and n_errors / len(ordered) > max_error_rate:
        reason = (
            f"{n_errors} of {len(ordered)} samples errored ({n_errors / len(ordered):.1%} > the "
            f"--max-error-rate of {max_error_rate:.1%}); re-run to retry them"
        )
    return RunMetrics(
        task=task.name,
        model=info.name,
        status="incomplete" if reason else "complete",
        reason=reason,
        n=len(ordered),
        n_errors=n_errors,
        n_parse_failures=failures.not_parsed,
        n_truncated=failures.truncated,
        n_excluded=max(len(data.excluded), data.info.n_excluded),
        batch_size=batch_size,
        scoring=task.scoring_identity(),
        metrics=values,
        metric_specs=task.metric_specs(),
        per_group=per_group,
        wall_s=round(wall_s, 3),
    )


def print_metrics(metrics: RunMetrics, console: Console | None = None) -> None:
    labels = {spec.name: spec.label for spec in metrics.metric_specs}
    table = Table(title=f"{metrics.task} / {metrics.model}")
    for column in ("metric", "value", "95% CI", "n"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, m in metrics.metrics.items():
        ci = f"[{m.ci_low:.3f}, {m.ci_high:.3f}]" if m.ci_low is not None and m.ci_high is not None else "-"
        table.add_row(labels.get(name, name), "-" if m.value is None else f"{m.value:.3f}", ci, str(m.n))
    console = console or Console()
    console.print(table)
    console.print(
        f"n={metrics.n}  errors={metrics.n_errors}  not fully parsed={metrics.n_parse_failures}  "
        f"truncated={metrics.n_truncated}  excluded before the run={metrics.n_excluded}"
    )
    if metrics.n_truncated:
        console.print(
            f"[yellow]{metrics.n_truncated} answers were cut at max_new_tokens: they score as written "
            "(see `stop` in predictions.jsonl); raise --max-new-tokens if the model was still answering[/yellow]"
        )
    if metrics.status != "complete":
        console.print(f"[bold red]INCOMPLETE:[/bold red] {metrics.reason}")
