"""The library API: what the CLI does, from Python, as thin layers over the same functions.

On the default task's synthetic catalog with the tiny test model:

>>> import tempfile, harness
>>> out = tempfile.mkdtemp()
>>> base = harness.evaluate(model="tiny", data="synthetic", limit=6, max_new_tokens=8,
...                         output_dir=f"{out}/runs", quiet=True)
>>> base.metrics.n, base.metrics.status
(6, 'complete')
>>> tuned = harness.train("tiny", data="synthetic", max_steps=2, n_eval=2,
...                       output_dir=f"{out}/adapter", quiet=True)
>>> tuned.steps
2
>>> after = harness.evaluate(model=str(tuned.output_dir), data="synthetic", limit=6,
...                          max_new_tokens=8, output_dir=f"{out}/runs", quiet=True)
>>> comparison = harness.compare(base, after)
>>> [m.metric for m in comparison.metrics] == list(base.specs)  # every metric the task defines
True
>>> comparison.to_markdown(f"{out}/report.md").is_file()
True
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.core.run import Run, read_run
from tasks import DEFAULT_TASK

if TYPE_CHECKING:
    from backends.trl import TrainResult
    from harness.core.schema import ModelInfo
    from reports.compare import Comparison


def evaluate(task: str = DEFAULT_TASK, model: str | ModelInfo = "base", **options: Any) -> Run:
    """Evaluate ``model`` on ``task`` (``harness run``) and return the finished run.

    ``options`` are :func:`harness.runner.run_eval`'s: data, split, limit, batch_size, prompt,
    output_dir, max_new_tokens, device, dtype, max_error_rate, fresh, quiet... An identical finished
    run is returned without generating again.
    """
    from harness.runner import run_eval

    return read_run(run_eval(task=task, model=model, **options))


def train(model: str = "base", task: str = DEFAULT_TASK, **options: Any) -> TrainResult:
    """Fine-tune ``model`` on ``task``'s train split (``harness train``): TRL SFTTrainer + LoRA.

    ``options`` are :func:`harness.training.run_training`'s: data, epochs or max_steps, lora_r, lr,
    batch_size, grad_accum, qlora, output_dir, resume, overwrite, report_to, seed, quiet...
    The result's ``output_dir`` is a model name for :func:`evaluate` (the adapter on its base).
    """
    from harness.training import run_training

    return run_training(model=model, task=task, **options)


def compare(
    run_a: Run | str | Path, run_b: Run | str | Path, *, allow_incomplete: bool = False, **options: Any
) -> Comparison:
    """Compare run B against run A sample by sample (``harness report A B``).

    Refuses runs on different test sets, and unfinished or incomplete runs unless
    ``allow_incomplete``. The result has ``.metrics`` (paired differences, CIs, p-values),
    ``.to_markdown(path)`` and ``.to_wandb()``. ``options``: alpha, n_boot, seed.
    """
    from reports.compare import compare_runs
    from reports.report import usable

    a, b = (r if isinstance(r, Run) else read_run(r) for r in (run_a, run_b))
    usable([a], allow_incomplete)
    usable([b], allow_incomplete)
    return compare_runs(a, b, **options)
