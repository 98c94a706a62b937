"""The `harness` command line: one function per subcommand, heavy imports inside the functions.

Over 300 lines on purpose: it is the option declarations of eight subcommands, each calling one
function of the library (harness.api, reports.report) and nothing more.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from tasks import DEFAULT_TASK  # a name only: importing it loads no task

# Options several commands share, defined once.
DataOption = Annotated[
    str | None, typer.Option(help="hub | synthetic | path to CSV/Parquet/JSONL (default: the task's).")
]
DeviceOption = Annotated[str | None, typer.Option(help="cpu | cuda | cuda:N (default: cuda when available).")]
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
) -> None:
    """Validate a task config and show its first rows as the model sees them."""
    from harness.taskcheck import check_task
    from tasks.config import TaskConfigError

    try:
        round_trips = check_task(file, data=data, rows=rows)
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
        typer.echo(f"{name:<16} {description}")


@app.command("run")
def run_cmd(
    task: TaskOption = DEFAULT_TASK,
    model: Annotated[str, typer.Option(help="Named model, alias, hub id or local path.")] = "base",
    data: DataOption = None,
    prompt: Annotated[str, typer.Option(help="default | instructed | few-shot.")] = "default",
    split: Annotated[str, typer.Option(help="train | validation | test.")] = "test",
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N samples.")] = None,
    batch_size: Annotated[int, typer.Option(help="Generation batch size (outputs do not depend on it).")] = 8,
    output_dir: Annotated[Path, typer.Option(help="Where run directories go.")] = Path("runs"),
    fresh: Annotated[bool, typer.Option("--fresh", help="Start over instead of resuming.")] = False,
    max_new_tokens: Annotated[
        int | None,
        typer.Option(help="Generation budget per sample (default: the task's longest target + 25 % + 8)."),
    ] = None,
    max_error_rate: Annotated[
        float, typer.Option(help="Above this share of errored samples the run is incomplete (exit 1).")
    ] = 0.05,
    dtype: Annotated[
        str | None, typer.Option(help="float32 | bfloat16 | float16 (default: bf16 on GPU, fp32 on CPU).")
    ] = None,
    revision: Annotated[str | None, typer.Option(help="Model revision (hub ids).")] = None,
    trust_remote_code: Annotated[
        bool,
        typer.Option(
            "--trust-remote-code", help="Run the model repository's own code (needs a pinned revision)."
        ),
    ] = False,
    device: DeviceOption = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Served models (openai:<model>@<url>): requests in flight (default 8).")
    ] = None,
    processes: ProcessesOption = 1,
    min_new_tokens: Annotated[
        int | None, typer.Option(help="Speed benchmarks: generate at least N tokens (end tokens ignored).")
    ] = None,
    num_crops: Annotated[
        int | None,
        typer.Option(help="Phi-3-Vision image crops (default: the model's; 16 for 3.0, 4 for 3.5)."),
    ] = None,
) -> None:
    """Evaluate a model on a task; resumes where an interrupted run stopped (errored samples are retried)."""
    relaunch(processes)
    from harness.api import evaluate

    with user_errors():
        run = evaluate(
            task=task,
            model=model,
            data=data,
            split=split,
            limit=limit,
            batch_size=batch_size,
            output_dir=output_dir,
            fresh=fresh,
            max_new_tokens=max_new_tokens,
            revision=revision,
            trust_remote_code=trust_remote_code,
            device=device,
            dtype=dtype,
            max_error_rate=max_error_rate,
            prompt=prompt,
            concurrency=concurrency,
            min_new_tokens=min_new_tokens,
            num_crops=num_crops,
        )
    from harness.distributed import world

    if not world().main:  # one of several processes: rank 0 reports
        return
    typer.echo(f"run directory: {run.path}")
    if not run.complete:  # written, but incomplete: its numbers are not final
        raise typer.Exit(1)


@app.command("train")
def train_cmd(
    backend: Annotated[str, typer.Option(help="Training backend.")] = "trl",
    model: Annotated[
        str, typer.Option(help="Model to fine-tune (named model, alias, hub id or path).")
    ] = "base",
    task: TaskOption = DEFAULT_TASK,
    data: DataOption = None,
    epochs: Annotated[float | None, typer.Option(help="Epochs (default: 1 for real models).")] = None,
    max_steps: Annotated[
        int | None, typer.Option(help="Stop after N optimizer steps (overrides --epochs).")
    ] = None,
    lora_r: Annotated[int | None, typer.Option(help="LoRA rank.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Per-device batch size.")] = None,
    grad_accum: Annotated[int | None, typer.Option(help="Gradient accumulation steps.")] = None,
    qlora: Annotated[
        bool, typer.Option("--qlora", help="4-bit QLoRA (needs a CUDA GPU + bitsandbytes).")
    ] = False,
    output_dir: Annotated[Path | None, typer.Option(help="Default: outputs/train/<model>-<time>.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the newest checkpoint in --output-dir.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a finished adapter in --output-dir.")
    ] = False,
    report_to: Annotated[str, typer.Option(help="none | wandb (offline without an API key).")] = "none",
    seed: Annotated[int, typer.Option(help="Seed of training (the split is the task's own).")] = 0,
    limit: Annotated[int | None, typer.Option(help="Use only the first N training samples.")] = None,
    eval_every: Annotated[
        int | None, typer.Option(help="Generate on the validation slice every N steps.")
    ] = None,
    n_eval: Annotated[int | None, typer.Option(help="Size of that validation slice.")] = None,
    save_steps: Annotated[int | None, typer.Option(help="Save a checkpoint every N optimizer steps.")] = None,
    device: DeviceOption = None,
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

    if dry_run:
        from harness.plan import dry_run as plan

        with user_errors():
            plan(model, processes=processes, strategy=strategy, qlora=qlora, lora_r=lora_r,
                 batch_size=batch_size, grad_accum=grad_accum)  # fmt: skip
        return
    relaunch(processes)
    if backend != "trl":
        fail(f"unknown training backend {backend!r}; valid backends: trl")
    if report_to not in ("none", "wandb"):
        fail(f"--report-to must be none or wandb, not {report_to!r}")
    from harness.api import train

    with user_errors():
        out = train(
            model=model,
            task=task,
            data=data,
            epochs=epochs,
            max_steps=max_steps,
            lora_r=lora_r,
            lr=lr,
            batch_size=batch_size,
            grad_accum=grad_accum,
            qlora=qlora,
            output_dir=output_dir,
            resume=resume,
            overwrite=overwrite,
            report_to=report_to,
            seed=seed,
            limit=limit,
            eval_every=eval_every,
            n_eval=n_eval,
            save_steps=save_steps,
            device=device,
        )
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
    from harness.identity import find_runs
    from reports.report import make_report

    def runs_of(value: str):
        if (Path(value) / "config.json").is_file() and (Path(value) / "predictions.jsonl").exists():
            return Path(value)
        return find_runs(value, task=task_name, data=data, runs_dir=runs_dir)

    with user_errors():
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


def _task_name(task: str) -> str:
    """A task file's or a dbq: spec's own name (what its runs record); a plain name as it is."""
    from tasks import get_task

    if task.endswith(".toml") or task.startswith("dbq:"):
        return get_task(task).name
    return task


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
