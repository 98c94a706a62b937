"""`harness task check FILE`: validate a task config and show its first rows as the model sees them."""

from __future__ import annotations

import typer


def check_task(name_or_file: str, *, data: str | None = None, rows: int = 3) -> bool:
    """Print the task's definition and first rows: question, target, the parsed target (= the fields).

    Raises TaskConfigError listing every problem of the config, HarnessError for its data (e.g. a
    column the table lacks). Returns whether every shown target parses back to its own fields.
    Plain lines, not a table: targets are copied from here into prompts and bug reports.
    """
    from tasks import get_task
    from tasks.config import PROMPTS

    task = get_task(name_or_file)
    typer.echo(f"{task.name} ({task.source}): {task.description}")
    for f in task.fields:
        typer.echo(f"  field {f.name}: {f.kind}, column {f.column!r}, labels {', '.join(f.labels)}")
    for prompt in PROMPTS:
        typer.echo(f"  prompt {prompt}: {get_task(name_or_file, prompt=prompt).question()}")
    typer.echo(f"first rows of {data or task.default_source()}:")
    all_ok = True
    for index, truth in task.preview(data, rows):
        if isinstance(truth, str):
            typer.echo(f"  row {index}: excluded: {truth}")
            continue
        target = task._render(truth)
        parsed = task.parse(target)
        ok = parsed == truth
        all_ok &= ok
        typer.echo(f"  row {index}: target: {target}")
        typer.echo(f"         parsed: {parsed} ({'ok' if ok else 'DIFFERS from the row: check the labels'})")
    return all_ok
