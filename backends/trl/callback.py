"""What the trainer reports while it trains: the evaluation-first callback and a compact log line.

The callback knows nothing of tasks: it is handed ``evaluate(model) -> (metrics, rows)`` by the
caller (harness/training.py), which generates through the same loop as `harness run` and scores with
the task's own parser and scorers, so the numbers during training mean what a run's numbers mean.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

# (metrics by name, rows of (id, image path, target, output) to show) for the model as it is now.
Evaluate = Callable[[Any], tuple[dict[str, float], list[tuple[str, str, str, str]]]]


class GenerationEvalCallback(TrainerCallback):
    """Every ``every`` optimizer steps and at the last step: ``evaluate`` the model, log the metrics.

    The metrics go through ``trainer.log`` as ``eval_<name>`` so every reporter (W&B:
    ``eval/<name>``) sees them next to the loss; with W&B a table of images, truths and outputs too.
    """

    def __init__(self, evaluate: Evaluate, every: int, table_rows: int = 8):
        self.evaluate_fn = evaluate
        self.every = every
        self.table_rows = table_rows
        self.trainer = None  # set once the trainer exists: trainer.log is how metrics reach every reporter
        self.history: list[dict[str, Any]] = []
        self.last: dict[str, float] = {}
        self._done_step = -1

    def on_step_end(self, args, state, control, model=None, **kwargs):
        last = state.global_step >= state.max_steps
        if (self.every > 0 and state.global_step % self.every == 0) or last:
            should_log = control.should_log
            self.evaluate(model, state.global_step)
            control.should_log = should_log  # trainer.log() clears it: the step's loss must still be logged
        return control

    def evaluate(self, model, step: int) -> dict[str, float]:
        if step == self._done_step:
            return self.last
        was_training = model.training
        model.eval()
        try:
            metrics, rows = self.evaluate_fn(model)
        finally:
            model.train(was_training)
        metrics = {k: float(v) for k, v in metrics.items()}
        self.last, self._done_step = metrics, step
        self.history.append({"step": step, **metrics})
        if self.trainer is not None:
            self.trainer.log({f"eval_{k}": v for k, v in metrics.items()})
        self._log_table(rows, step)
        return metrics

    def _log_table(self, rows: list[tuple[str, str, str, str]], step: int) -> None:
        wandb = sys.modules.get("wandb")  # only when this run reports to W&B
        if wandb is None or wandb.run is None:
            return
        table = wandb.Table(columns=["step", "id", "image", "truth", "prediction"])
        for sample_id, image, target, output in rows[: self.table_rows]:
            table.add_data(int(step), str(sample_id), wandb.Image(image), str(target), str(output))
        wandb.log({"eval/samples": table}, commit=False)


class CompactProgress(ProgressCallback):
    """Trainer's progress bar, with one short line per logging step instead of a raw dict."""

    SHOWN = {"loss": "loss", "grad_norm": "grad_norm", "learning_rate": "lr"}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or self.training_bar is None or not logs:
            return
        parts = [f"step {state.global_step}/{state.max_steps}"]
        parts += [f"{self.SHOWN[k]} {v:.3g}" for k, v in logs.items() if k in self.SHOWN]
        parts += [f"{k.removeprefix('eval_')} {v:.3g}" for k, v in logs.items() if k.startswith("eval_")]
        if len(parts) > 1:
            self.training_bar.write("  ".join(parts))
