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
from harness.options import EvalOptions, TrainOptions
from tasks import DEFAULT_TASK

if TYPE_CHECKING:
    from backends.trl import TrainResult
    from harness.core.schema import ModelInfo
    from reports.compare import Comparison
    from reports.leaderboard import Leaderboard


def evaluate(
    task: str = DEFAULT_TASK,
    model: str | ModelInfo = "base",
    options: EvalOptions | None = None,
    **values: Any,
) -> Run:
    """Evaluate ``model`` on ``task`` (``harness run``) and return the finished run.

    ``options``, and keyword ``values`` on top of them, are :class:`harness.options.EvalOptions`:
    data, split, limit, batch_size, prompt, output_dir, max_new_tokens, device, dtype, ... A bad
    value raises a HarnessError in one line. An identical finished run is returned without
    generating again.
    """
    from harness.runner import run_eval

    return read_run(run_eval(task, model, EvalOptions.build(options, **values)))


def train(
    model: str = "base", task: str = DEFAULT_TASK, options: TrainOptions | None = None, **values: Any
) -> TrainResult:
    """Fine-tune ``model`` on ``task``'s train split (``harness train``): TRL SFTTrainer + LoRA.

    ``options`` and keyword ``values`` are :class:`harness.options.TrainOptions`: data, epochs or
    max_steps, lora_r, lr, batch_size, grad_accum, qlora, output_dir, resume, overwrite, report_to,
    seed, quiet, ... The result's ``output_dir`` is a model name for :func:`evaluate` (the adapter
    on its base).
    """
    from harness.training import run_training

    return run_training(model, task, TrainOptions.build(options, **values))


def compare(
    run_a: Run | str | Path, run_b: Run | str | Path, *, allow_incomplete: bool = False, **options: Any
) -> Comparison:
    """Compare run B against run A sample by sample (``harness report A B``).

    Refuses runs on different test sets, and unfinished or incomplete runs unless
    ``allow_incomplete``. The result has ``.metrics`` (paired differences, CIs, p-values),
    ``.to_markdown(path)`` and ``.to_wandb()``. ``options``: alpha, n_boot, seed.
    """
    from reports.compare import compare_runs, usable

    a, b = (r if isinstance(r, Run) else read_run(r) for r in (run_a, run_b))
    usable([a], allow_incomplete)
    usable([b], allow_incomplete)
    return compare_runs(a, b, **options)


def leaderboard(
    runs: list[Run | str | Path] | None = None,
    *,
    task: str | None = None,
    data: str | None = None,
    output_dir: str | Path = "runs",
    metric: str | None = None,
    allow_incomplete: bool = False,
    alpha: float = 0.05,
) -> Leaderboard:
    """Rank runs (``harness leaderboard``): run directories, Runs or model names (resolved as
    ``harness run --model`` resolves them; every run of that model on ``task``), or with none given,
    every finished run of ``task`` under ``output_dir``.

    Runs are ranked per test set by ``metric`` (default: the task's primary metric) with honest ties
    (a paired test against the best, Holm-corrected). The result has ``.boards``, ``.to_frame()``,
    ``.to_markdown(path)``, ``.to_csv(path)``, ``.to_json(path)`` and ``.to_wandb()``.
    """
    from reports.leaderboard import build, collect

    task_name = _task_name(task) if task else None
    found_paths = [p for item in runs or [] for p in _run_paths(item, task_name, data, Path(output_dir))]
    paths = list(dict.fromkeys(p.resolve() for p in found_paths))  # a run named twice counts once
    found, skipped = collect(paths or None, task=task_name, data=data, output_dir=Path(output_dir), allow_incomplete=allow_incomplete)  # fmt: skip
    board = build(found, metric=metric, alpha=alpha)
    board.skipped = skipped
    return board


def _run_paths(item: Run | str | Path, task: str | None, data: str | None, output_dir: Path) -> list[Path]:
    """A run, a run directory, or a model name's newest run on each test set and prompt (a finished,
    complete one where there is one: an old interrupted run of the model does not stand for it)."""
    from harness.core.run import is_run_dir, why_incomplete
    from harness.identity import find_runs

    if isinstance(item, Run):
        return [item.path]
    if is_run_dir(item):
        return [Path(item)]
    newest: dict[tuple, Run] = {}
    for path in find_runs(
        str(item), task=task or DEFAULT_TASK, data=data, runs_dir=output_dir
    ):  # newest first
        run = read_run(path)
        key = (run.config.data.fingerprint, run.config.data.split, run.config.prompt)
        if key not in newest or (why_incomplete(newest[key]) and not why_incomplete(run)):
            newest[key] = run
    return [run.path for run in newest.values()]


def _task_name(task: str) -> str:
    """A task file's or a dbq: spec's own name (what its runs record); a plain name as it is."""
    from tasks import get_task

    if task.endswith(".toml") or task.startswith("dbq:"):
        return get_task(task).name
    return task
