"""`harness demo`: the whole job on the embedded default, offline, on a CPU, in minutes.

Builds the tiny Phi-3-Vision-architecture model, evaluates it on the synthetic catalog's test split,
fine-tunes it with the TRL backend on the train split, evaluates the tuned model on the same test
split and writes a comparison report with plots; then asks the base model with the other prompts
(instructed, and choices: the catalog's labels listed) and ranks prompts against the fine-tune on a
leaderboard: "fine-tune or prompt?" on one test set.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.panel import Panel

from harness.options import EvalOptions
from tasks import DEFAULT_TASK

MODEL = "tiny-phi3v"
DATA = "synthetic"


def run_demo(workdir: Path, *, quick: bool = False) -> dict[str, Path]:
    """Run every step, printing where each result lands; returns those paths."""
    from harness.api import evaluate, leaderboard, train
    from harness.models import resolve
    from reports.compare import make_report

    console = Console()
    workdir = Path(workdir)
    runs_dir = workdir / "runs"
    started = time.perf_counter()
    options = EvalOptions(
        data=DATA, split="test", limit=48 if quick else None, batch_size=16, output_dir=runs_dir
    )

    console.rule("[bold]1/5  evaluate the base model")
    base_run = evaluate(DEFAULT_TASK, MODEL, options).path

    console.rule("[bold]2/5  fine-tune it (TRL SFTTrainer + LoRA) on the train split")
    tuned = train(
        MODEL,
        DEFAULT_TASK,
        data=DATA,
        output_dir=workdir / "outputs" / "train" / f"{MODEL}-{datetime.now():%Y%m%d-%H%M%S}",
        max_steps=120 if quick else None,
    ).output_dir

    console.rule("[bold]3/5  evaluate the tuned model on the same test split")
    # Named like the alias `harness run --model tiny-phi3v-tuned` resolves to, wherever --workdir is.
    tuned_info = resolve(str(tuned)).model_copy(update={"name": f"{MODEL}-tuned"})
    tuned_run = evaluate(DEFAULT_TASK, tuned_info, options).path

    console.rule("[bold]4/5  compare")
    result = make_report(base_run, tuned_run, out=runs_dir / "reports" / "demo.md")

    console.rule("[bold]5/5  prompts against the fine-tune: the leaderboard")
    prompted = [evaluate(DEFAULT_TASK, MODEL, options.model_copy(update={"prompt": p})).path for p in ("instructed", "choices")]  # fmt: skip
    board = leaderboard([base_run, *prompted, tuned_run])
    ranking = board.to_markdown(runs_dir / "reports" / "leaderboard.md")

    wall = time.perf_counter() - started
    paths = {"base run": base_run, "tuned model": tuned, "tuned run": tuned_run, "report": result.markdown, "leaderboard": ranking}  # fmt: skip
    lines = "\n".join(f"{name:<12} {path}" for name, path in paths.items())
    console.print(Panel(f"{lines}\n\ndone in {wall:.0f} s", title="harness demo"))
    return paths
