"""The `harness` command line: one function per subcommand, heavy imports inside the functions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Evaluation-first benchmarks for vision-language models on product catalogs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str) -> None:
    """One clear line on stderr and a non-zero exit: how every user error ends."""
    typer.secho(f"error: {message}", err=True, fg="red")
    raise typer.Exit(2)


@app.command("tasks")
def tasks_cmd() -> None:
    """List the tasks."""
    from tasks import TASKS

    for name, (_, _, description) in sorted(TASKS.items()):
        typer.echo(f"{name:<12} {description}")


@app.command("models")
def models_cmd() -> None:
    """List the named models and aliases."""
    from harness.models import list_models

    for name, description in list_models():
        typer.echo(f"{name:<16} {description}")


@app.command("run")
def run_cmd(
    task: Annotated[str, typer.Option(help="Task name (see `harness tasks`).")] = "burberry",
    model: Annotated[str, typer.Option(help="Named model, alias, hub id or local path.")] = "base",
    data: Annotated[str, typer.Option(help="hub | synthetic | path to CSV/Parquet/JSONL.")] = "hub",
    split: Annotated[str, typer.Option(help="train | validation | test.")] = "test",
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N samples.")] = None,
    batch_size: Annotated[int, typer.Option(help="Generation batch size (outputs do not depend on it).")] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the split and the synthetic catalog.")] = 0,
    output_dir: Annotated[Path, typer.Option(help="Where run directories go.")] = Path("runs"),
    fresh: Annotated[bool, typer.Option("--fresh", help="Start over instead of resuming.")] = False,
    max_new_tokens: Annotated[int, typer.Option(help="Generation budget per sample.")] = 64,
    revision: Annotated[str | None, typer.Option(help="Model revision (hub ids).")] = None,
    trust_remote_code: Annotated[
        bool, typer.Option("--trust-remote-code", help="Run the model repository's own code (needs a pinned revision).")
    ] = False,
    device: Annotated[str | None, typer.Option(help="cpu | cuda | cuda:N (default: cuda when available).")] = None,
) -> None:
    """Evaluate a model on a task; resumes where an interrupted run stopped."""
    from harness.errors import HarnessError
    from harness.runner import run_eval

    try:
        run_dir = run_eval(
            task=task,
            model=model,
            data=data,
            split=split,
            limit=limit,
            batch_size=batch_size,
            seed=seed,
            output_dir=output_dir,
            fresh=fresh,
            max_new_tokens=max_new_tokens,
            revision=revision,
            trust_remote_code=trust_remote_code,
            device=device,
        )
    except HarnessError as err:
        fail(str(err))
    typer.echo(f"run directory: {run_dir}")


def main() -> None:  # pragma: no cover - console entry point
    app()
