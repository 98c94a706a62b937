"""`harness demo`: the whole job on the embedded default, offline, on a CPU, in minutes.

Builds the tiny Phi-3-Vision-architecture model, evaluates it on the synthetic catalog's test split,
fine-tunes it with the TRL backend on the train split, evaluates the tuned model on the same test
split and writes a comparison report with plots.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.panel import Panel

from tasks import DEFAULT_TASK

MODEL = "tiny-phi3v"
DATA = "synthetic"


def run_demo(workdir: Path, *, quick: bool = False) -> dict[str, Path]:
    """Run every step, printing where each result lands; returns those paths."""
    from harness.models import resolve
    from harness.runner import run_eval
    from harness.training import run_training
    from reports.report import make_report

    console = Console()
    workdir = Path(workdir)
    runs_dir = workdir / "runs"
    started = time.perf_counter()
    limit = 48 if quick else None
    eval_kwargs = dict(
        task=DEFAULT_TASK, data=DATA, split="test", limit=limit, batch_size=16, output_dir=runs_dir
    )

    console.rule("[bold]1/4  evaluate the base model")
    base_run = run_eval(model=MODEL, **eval_kwargs)

    console.rule("[bold]2/4  fine-tune it (TRL SFTTrainer + LoRA) on the train split")
    tuned = run_training(
        model=MODEL,
        task=DEFAULT_TASK,
        data=DATA,
        output_dir=workdir / "outputs" / "train" / f"{MODEL}-{datetime.now():%Y%m%d-%H%M%S}",
        max_steps=120 if quick else None,
        resume=False,
    ).output_dir

    console.rule("[bold]3/4  evaluate the tuned model on the same test split")
    # Named like the alias `harness run --model tiny-phi3v-tuned` resolves to, wherever --workdir is.
    tuned_info = resolve(str(tuned)).model_copy(update={"name": f"{MODEL}-tuned"})
    tuned_run = run_eval(model=tuned_info, **eval_kwargs)

    console.rule("[bold]4/4  compare")
    result = make_report(base_run, tuned_run, out=runs_dir / "reports" / "demo.md")

    wall = time.perf_counter() - started
    paths = {"base run": base_run, "tuned model": tuned, "tuned run": tuned_run, "report": result.markdown}
    lines = "\n".join(f"{name:<12} {path}" for name, path in paths.items())
    console.print(Panel(f"{lines}\n\ndone in {wall:.0f} s", title="harness demo"))
    return paths
