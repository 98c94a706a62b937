"""The `harness` command line: one function per subcommand, heavy imports inside the functions.

Each command declares its options for typer (their help and defaults come from harness.options)
and calls one function of the library (harness.api, reports.compare) with them.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from harness.options import EvalOptions, TrainOptions
from tasks import DEFAULT_TASK  # a name only: importing it loads no task

# Options several commands share, defined once (the rest are EvalOptions' and TrainOptions' fields).
ProcessesOption = Annotated[
    int, typer.Option(help="Data-parallel processes on this node (torchrun; one per GPU). 1: this process.")
]
TaskOption = Annotated[
    str, typer.Option(help="Task name, task .toml or dbq:<Brand>.<Country> (see `harness tasks`).")
]

app = typer.Typer(
    help="Evaluation-first benchmarks for vision-language models on product catalogs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Also show the libraries' own warnings and log lines.")
    ] = False,
) -> None:
    """Evaluation-first benchmarks for vision-language models on product catalogs."""
    from harness.core.allocator import tune_malloc

    tune_malloc()  # before any subcommand allocates: large CPU tensors stay mapped (HARNESS_MALLOC=0: off)
    if not verbose:
        quiet_libraries()


def quiet_libraries() -> None:
    """Keep transformers/TRL/peft deprecation notices and info logs off the console.

    Warnings that put numbers at risk are the harness's own (weights missing from a checkpoint,
    truncation, errors, incomplete runs) and are always shown; --verbose shows everything.
    """
    import os
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DATASETS_VERBOSITY", "error")
    os.environ.setdefault("WANDB_SILENT", "true")
    for kind in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", "", kind, r"(transformers|trl|peft|accelerate|torch)(\.|$)")


def relaunch(processes: int) -> None:
    """--processes N: run this same command in N processes through torchrun, and exit with its code."""
    from harness.distributed import launch, world

    if processes < 1:
        fail(f"--processes must be >= 1, got {processes}")
    if processes == 1 or world().size > 1:  # one process, or already one of the launched ones
        return
    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--processes":
            skip = True
        elif not arg.startswith("--processes="):
            argv.append(arg)
    raise typer.Exit(launch(processes, argv))


def fail(message: str) -> None:
    """One clear line on stderr and a non-zero exit: how every user error ends."""
    typer.secho(f"error: {message}", err=True, fg="red")
    raise typer.Exit(2)


@contextmanager
def user_errors():
    """Turn a HarnessError (bad input, named file/row/field) into `fail`'s one line."""
    from harness.core.errors import HarnessError

    try:
        yield
    except HarnessError as err:
        fail(str(err))


@app.command("tasks")
def tasks_cmd() -> None:
    """List the tasks: built-in, from $HARNESS_TASKS or ./tasks/, and the dbq:<Brand>.<Country> family."""
    from tasks import list_tasks

    for name, source, description in list_tasks():
        typer.echo(f"{name:<16} {source:<24} {description}")
    typer.echo(f"{'dbq:<Brand>.<Country>':<16} {'derived':<24} a DBQ catalog, e.g. dbq:Gucci.Canada")


task_app = typer.Typer(help="Work with task config files.", no_args_is_help=True)
app.add_typer(task_app, name="task")


@task_app.command("check")
def task_check_cmd(
    file: Annotated[str, typer.Argument(help="A task .toml (or a task name).")],
    data: Annotated[
        str | None, typer.Option(help="hub | synthetic | a table (default: the task's own).")
    ] = None,
    rows: Annotated[int, typer.Option(help="How many rows to show.")] = 3,
    model: Annotated[
        str | None,
        typer.Option(
            help="Also show what each row's image becomes for this model (processor only): image and prompt tokens, memory at --batch-size."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="With --model: the batch the memory estimate is for.")] = 8,
    max_image_tokens: Annotated[
        int | None, typer.Option(help="With --model: " + _help(EvalOptions, "max_image_tokens"))
    ] = None,
) -> None:
    """Validate a task config and show its first rows as the model sees them."""
    from harness.taskcheck import check_images, check_task
    from tasks.config import TaskConfigError

    try:
        round_trips = check_task(file, data=data, rows=rows)
        if model:
            typer.echo(
                f"images for {model}"
                + (f" (--max-image-tokens {max_image_tokens})" if max_image_tokens else "")
                + ":"
            )
            check_images(
                file, model, data=data, rows=rows, batch_size=batch_size, max_image_tokens=max_image_tokens
            )
    except TaskConfigError as err:
        for line in err.lines:
            typer.secho(f"error: {line}", err=True, fg="red")
        raise typer.Exit(2) from None
    except Exception as err:  # noqa: BLE001 - HarnessError and the like: one line
        from harness.core.errors import HarnessError

        if not isinstance(err, HarnessError):
            raise
        fail(str(err))
    if not round_trips:  # a target that does not parse back would score a perfect model as wrong
        raise typer.Exit(1)


@app.command("models")
def models_cmd() -> None:
    """List the named models and aliases."""
    from harness.models import list_models

    for name, description in list_models():
        typer.echo(f"{name:<22} {description}")


def _help(options: type, name: str) -> str:
    return options.help_for(name)


def _values(options: type, given: dict) -> dict:
    """The command's parameters that are fields of ``options``, as typed."""
    return {k: v for k, v in given.items() if k in options.model_fields}


E, T = EvalOptions(), TrainOptions()  # the defaults the commands show


@app.command("run")
def run_cmd(
    task: TaskOption = DEFAULT_TASK,
    model: Annotated[str, typer.Option(help="Named model, alias, hub id or local path.")] = "base",
    data: Annotated[str | None, typer.Option(help=_help(EvalOptions, "data"))] = E.data,
    prompt: Annotated[str, typer.Option(help=_help(EvalOptions, "prompt"))] = E.prompt,
    split: Annotated[str, typer.Option(help=_help(EvalOptions, "split"))] = E.split,
    limit: Annotated[int | None, typer.Option(help=_help(EvalOptions, "limit"))] = E.limit,
    batch_size: Annotated[int, typer.Option(help=_help(EvalOptions, "batch_size"))] = E.batch_size,
    output_dir: Annotated[Path, typer.Option(help=_help(EvalOptions, "output_dir"))] = E.output_dir,
    fresh: Annotated[bool, typer.Option("--fresh", help=_help(EvalOptions, "fresh"))] = E.fresh,
    max_new_tokens: Annotated[
        int | None, typer.Option(help=_help(EvalOptions, "max_new_tokens"))
    ] = E.max_new_tokens,
    max_error_rate: Annotated[
        float, typer.Option(help=_help(EvalOptions, "max_error_rate"))
    ] = E.max_error_rate,
    dtype: Annotated[str | None, typer.Option(help=_help(EvalOptions, "dtype"))] = E.dtype,
    revision: Annotated[str | None, typer.Option(help=_help(EvalOptions, "revision"))] = E.revision,
    trust_remote_code: Annotated[
        bool, typer.Option("--trust-remote-code", help=_help(EvalOptions, "trust_remote_code"))
    ] = E.trust_remote_code,
    device: Annotated[str | None, typer.Option(help=_help(EvalOptions, "device"))] = E.device,
    concurrency: Annotated[int, typer.Option(help=_help(EvalOptions, "concurrency"))] = E.concurrency,
    processes: ProcessesOption = 1,
    min_new_tokens: Annotated[
        int | None, typer.Option(help=_help(EvalOptions, "min_new_tokens"))
    ] = E.min_new_tokens,
    num_crops: Annotated[int | None, typer.Option(help=_help(EvalOptions, "num_crops"))] = E.num_crops,
    max_image_tokens: Annotated[
        int | None, typer.Option(help=_help(EvalOptions, "max_image_tokens"))
    ] = E.max_image_tokens,
) -> None:
    """Evaluate a model on a task; resumes where an interrupted run stopped (errored samples are retried)."""
    relaunch(processes)
    from harness.api import evaluate

    with user_errors():
        run = evaluate(task, model, EvalOptions.build(**_values(EvalOptions, locals())))
    from harness.distributed import world

    if not world().main:  # one of several processes: rank 0 reports
        return
    typer.echo(f"run directory: {run.path}")
    if not run.complete:  # written, but incomplete: its numbers are not final
        raise typer.Exit(1)


@app.command("train")
def train_cmd(
    backend: Annotated[str, typer.Option(help=_help(TrainOptions, "backend"))] = T.backend,
    model: Annotated[
        str, typer.Option(help="Model to fine-tune (named model, alias, hub id or path).")
    ] = "base",
    task: TaskOption = DEFAULT_TASK,
    data: Annotated[str | None, typer.Option(help=_help(TrainOptions, "data"))] = T.data,
    epochs: Annotated[float | None, typer.Option(help=_help(TrainOptions, "epochs"))] = T.epochs,
    max_steps: Annotated[int | None, typer.Option(help=_help(TrainOptions, "max_steps"))] = T.max_steps,
    lora_r: Annotated[int | None, typer.Option(help=_help(TrainOptions, "lora_r"))] = T.lora_r,
    lr: Annotated[float | None, typer.Option(help=_help(TrainOptions, "lr"))] = T.lr,
    batch_size: Annotated[int | None, typer.Option(help=_help(TrainOptions, "batch_size"))] = T.batch_size,
    grad_accum: Annotated[int | None, typer.Option(help=_help(TrainOptions, "grad_accum"))] = T.grad_accum,
    qlora: Annotated[bool, typer.Option("--qlora", help=_help(TrainOptions, "qlora"))] = T.qlora,
    output_dir: Annotated[Path | None, typer.Option(help=_help(TrainOptions, "output_dir"))] = T.output_dir,
    resume: Annotated[bool, typer.Option("--resume", help=_help(TrainOptions, "resume"))] = T.resume,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help=_help(TrainOptions, "overwrite"))
    ] = T.overwrite,
    report_to: Annotated[str, typer.Option(help=_help(TrainOptions, "report_to"))] = T.report_to,
    seed: Annotated[int, typer.Option(help=_help(TrainOptions, "seed"))] = T.seed,
    limit: Annotated[int | None, typer.Option(help=_help(TrainOptions, "limit"))] = T.limit,
    eval_every: Annotated[int | None, typer.Option(help=_help(TrainOptions, "eval_every"))] = T.eval_every,
    n_eval: Annotated[int | None, typer.Option(help=_help(TrainOptions, "n_eval"))] = T.n_eval,
    save_steps: Annotated[int | None, typer.Option(help=_help(TrainOptions, "save_steps"))] = T.save_steps,
    device: Annotated[str | None, typer.Option(help=_help(TrainOptions, "device"))] = T.device,
    processes: ProcessesOption = 1,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print the plan and the memory per GPU for --processes GPUs; train nothing."
        ),
    ] = False,
    strategy: Annotated[
        str | None, typer.Option(help="With --dry-run: ddp | fsdp | zero2 | zero3 (default: all).")
    ] = None,
) -> None:
    """Fine-tune a model on a task's train split (TRL SFTTrainer + LoRA); leaves `<model>-tuned`."""
    with user_errors():
        options = TrainOptions.build(**_values(TrainOptions, locals()))
        if dry_run:
            from harness.plan import dry_run as plan

            plan(model, options, processes=processes, strategy=strategy)
            return
    relaunch(processes)
    from harness.api import train

    with user_errors():
        out = train(model, task, options)
    from harness.distributed import world

    if world().main:
        typer.echo(f"trained model: {out.output_dir}")


@app.command("export")
def export_cmd(
    model: Annotated[
        str, typer.Argument(help="A tuned model name (e.g. tiny-phi3v-tuned) or adapter directory.")
    ],
    out: Annotated[Path, typer.Option(help="Directory to write the standalone model to.")],
    merge: Annotated[
        bool, typer.Option("--merge/--no-merge", help="Merge the LoRA adapter into the base.")
    ] = True,
) -> None:
    """Write a standalone model directory that loads without remote code."""
    from harness.export import export

    with user_errors():
        path = export(model, out, merge=merge)
    typer.echo(f"exported: {path}")


@app.command("report")
def report_cmd(
    a: Annotated[str, typer.Argument(help="Model name or run directory (the baseline).")],
    b: Annotated[str | None, typer.Argument(help="Model name or run directory (the candidate).")] = None,
    task: TaskOption = DEFAULT_TASK,
    data: Annotated[str | None, typer.Option(help="Only runs on this data source.")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where run directories are.")] = Path("runs"),
    out: Annotated[Path | None, typer.Option(help="Markdown path (default runs/reports/A-vs-B.md).")] = None,
    wandb: Annotated[
        bool, typer.Option("--wandb", help="Also log a W&B run (offline without an API key).")
    ] = False,
    fail_if_worse: Annotated[
        list[str] | None, typer.Option(help="Exit 1 when B is significantly worse than A on this metric.")
    ] = None,
    allow_incomplete: Annotated[
        bool, typer.Option("--allow-incomplete", help="Report unfinished or incomplete runs too.")
    ] = False,
) -> None:
    """Compare two runs on the same test set (or describe one run).

    A and B are run directories or model names, resolved exactly as `harness run --model` does.
    """
    from harness.core.run import is_run_dir
    from harness.identity import find_runs
    from reports.compare import make_report

    def runs_of(value: str):
        if is_run_dir(value):
            return Path(value)
        return find_runs(value, task=task_name, data=data, runs_dir=runs_dir)

    with user_errors():
        from harness.api import _task_name

        task_name = _task_name(task)
        result = make_report(
            runs_of(a),
            runs_of(b) if b is not None else None,
            out=out,
            wandb=wandb,
            fail_if_worse=fail_if_worse or [],
            allow_incomplete=allow_incomplete,
        )
    typer.echo(f"report: {result.markdown}")
    raise typer.Exit(result.exit_code)


@app.command("leaderboard")
def leaderboard_cmd(
    runs: Annotated[
        list[str] | None,
        typer.Argument(help="Run directories or model names (default: every run of --task)."),
    ] = None,
    task: TaskOption = DEFAULT_TASK,
    data: Annotated[str | None, typer.Option(help="Only runs on this data source.")] = None,
    output_dir: Annotated[Path, typer.Option(help="Where run directories are.")] = Path("runs"),
    metric: Annotated[
        str | None, typer.Option(help="Rank by this metric (default: the task's primary).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Markdown path (default runs/reports/leaderboard.md).")
    ] = None,
    csv: Annotated[Path | None, typer.Option(help="Also write the table as CSV.")] = None,
    json: Annotated[Path | None, typer.Option(help="Also write the table as JSON.")] = None,
    wandb: Annotated[
        bool, typer.Option("--wandb", help="Also log a W&B run (offline without an API key).")
    ] = False,
    allow_incomplete: Annotated[
        bool, typer.Option("--allow-incomplete", help="Rank unfinished or incomplete runs too.")
    ] = False,
) -> None:
    """Rank runs on each test set: every metric with its CI, honest ties, cost; markdown, CSV, JSON, W&B."""
    from harness.api import leaderboard

    with user_errors():
        board = leaderboard(
            runs,
            task=task,
            data=data,
            output_dir=output_dir,
            metric=metric,
            allow_incomplete=allow_incomplete,
        )
        path = board.to_markdown(out)
        if wandb:
            typer.echo(f"W&B run: {board.to_wandb(out)}")
        for extra, write in ((csv, board.to_csv), (json, board.to_json)):
            if extra is not None:
                typer.echo(f"table: {write(extra)}")
    for b in board.boards:
        typer.echo(f"{b.title}: ranked by {b.metric.name} (= tied with the best)")
        tied = sum(e.rank == 1 for e in b.entries) > 1
        for e in b.entries:
            value = "-" if e.value is None else f"{e.value:.4g}"
            mark = "=" if tied and e.rank == 1 else " "
            typer.echo(f"  {e.rank or '-':>2}{mark} {e.name} [{e.run.config.prompt_name}] {value}")
    if board.skipped:
        typer.echo(f"left out {len(board.skipped)} run(s): " + "; ".join(board.skipped[:3]), err=True)
    typer.echo(f"leaderboard: {path}")


@app.command("demo")
def demo_cmd(
    workdir: Annotated[Path, typer.Option(help="Where runs/, outputs/ and reports/ go.")] = Path("."),
    quick: Annotated[
        bool, typer.Option("--quick", help="A smaller, faster demo (used by the tests).")
    ] = False,
) -> None:
    """The whole job offline on a CPU: tiny Phi-3-Vision, evaluate, fine-tune, evaluate, report."""
    from harness.demo import run_demo

    with user_errors():
        run_demo(workdir, quick=quick)


if __name__ == "__main__":
    app()
