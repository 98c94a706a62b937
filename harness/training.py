"""`harness train`: fine-tune a LoRA adapter on a task's train split, judged on its validation split.

The test split is never trained or validated on: it is loaded only to prove that no sample id and
no product group of it is among the training or validation samples. The split is the task's own
(its fixed split seed); ``--seed`` seeds training only. The adapter lands in
``<train_dir>/<base>-<YYYYmmdd-HHMMSS>/`` with a ``harness-train.json`` manifest (which records the
train/validation ids and groups), which is what ``--model <base>-tuned`` resolves to.
"""

from __future__ import annotations

import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.core.errors import HarnessError
from harness.core.schema import TRAIN_MANIFEST_FILE, Sample, TrainManifest
from harness.core.store import write_atomic

if TYPE_CHECKING:
    from backends.trl import TrainResult


def check_no_leak(train: list[Sample], validation: list[Sample], test: list[Sample]) -> None:
    """A test sample (or another colour of the same product: its group) in training is a leak."""
    seen = train + validation
    ids = {s.id for s in seen} & {s.id for s in test}
    groups = {s.group for s in seen if s.group} & {s.group for s in test if s.group}
    if ids or groups:
        shown = ", ".join(sorted(ids | groups)[:5])
        raise HarnessError(
            f"data leak: {len(ids)} test ids and {len(groups)} test groups are in train/validation ({shown})"
        )


def check_adapter_never_saw(adapter_dir: Path, task: str, data) -> None:
    """Refuse to evaluate an adapter on samples (or product groups) it was trained or validated on.

    Checked against the ids and groups its harness-train.json records, when it was trained on the
    same task and data source (another catalog's ids and titles say nothing about this one's).
    """
    from harness.models import _read_manifest

    path = Path(adapter_dir) / TRAIN_MANIFEST_FILE
    if not path.is_file():
        return  # a bare peft adapter trained elsewhere: nothing recorded to check against
    manifest = _read_manifest(path)
    if manifest.task != task or manifest.data.source != data.info.source:
        return
    if not manifest.train_ids:
        raise HarnessError(
            f"{path}: records no training ids (made by an older harness), so it cannot be checked for "
            "train/test leakage; re-train the adapter"
        )
    seen_ids = set(manifest.train_ids) | set(manifest.validation_ids)
    seen_groups = set(manifest.train_groups) | set(manifest.validation_groups)
    ids = sorted({s.id for s in data.samples} & seen_ids)
    groups = sorted({s.group for s in data.samples if s.group} & seen_groups)
    if ids or groups:
        raise HarnessError(
            f"data leak: adapter {adapter_dir} was trained or validated on {len(ids)} of the evaluated "
            f"{data.info.split} samples and {len(groups)} of their product groups (e.g. "
            f"{(ids or groups)[0]!r}); evaluate it on a split it never saw"
        )


def evaluator(task, samples: list[Sample], processor, device: str, batch_size: int, max_new_tokens: int):
    """``evaluate(model)`` for the training callback: the validation slice through the one generation
    loop of `harness run` (harness/generation.py), judged by the task's own parser, scorers and
    aggregate, so a number seen during training means what it means in a run."""
    from backends.hf import HFGenerator
    from harness.generation import generate_records

    def evaluate(model):
        generator = HFGenerator(model, processor, device)
        records, _ = generate_records(
            task, generator, samples, batch_size=batch_size, max_new_tokens=max_new_tokens
        )
        aggregates, _ = task.aggregate(records)
        metrics = {k: v.value for k, v in aggregates.items() if v.value is not None}
        by_id = {s.id: s for s in samples}
        rows = [(r.id, r.image, task.target(by_id[r.id]), r.output or r.error or "") for r in records]
        return metrics, rows

    return evaluate


def _examples(task, samples: list[Sample]):
    from backends.trl import Example

    return [
        Example(id=s.id, messages=task.messages(s), target=task.target(s), image=s.image) for s in samples
    ]


def _newest_unfinished(root: Path, stem: str) -> Path | None:
    """For --resume without --output-dir: the newest run of this base that has checkpoints but no manifest.

    Only directories named exactly ``<stem>-YYYYmmdd-HHMMSS``: "tiny" never resumes "tiny-phi3v-...".
    """
    from harness.models import train_output_re

    shape = train_output_re(stem)
    runs = [
        d
        for d in sorted(root.glob(f"{stem}-*"))
        if shape.match(d.name) and not (d / TRAIN_MANIFEST_FILE).exists() and any(d.glob("checkpoint-*"))
    ]
    return runs[-1] if runs else None


def run_training(
    model: str = "base",
    task: str | None = None,
    data: str | None = None,
    epochs: float | None = None,
    max_steps: int | None = None,
    lora_r: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    grad_accum: int | None = None,
    qlora: bool = False,
    output_dir: Path | str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    report_to: str = "none",
    seed: int = 0,
    eval_every: int | None = None,
    n_eval: int | None = None,
    limit: int | None = None,
    device: str | None = None,
    save_steps: int | None = None,
    revision: str | None = None,
    quiet: bool = False,
) -> TrainResult:
    """Train ``model`` on ``task``'s train split; the result's ``output_dir`` holds adapter + manifest."""
    from backends.hf import load_model_and_processor
    from backends.trl import default_params, read_recipe, train
    from harness.distributed import barrier, broadcast, join, world
    from harness.models import canonical, load_settings, resolve, train_stem
    from harness.runner import budget_for, planned_device
    from tasks import DEFAULT_TASK, get_task

    if epochs is not None and max_steps is not None:
        raise HarnessError("give --epochs or --max-steps, not both")
    if resume and overwrite:
        raise HarnessError("give --resume or --overwrite, not both")
    info = resolve(model, revision=revision)
    if info.adapter:
        raise HarnessError(
            f"model {model!r} is already a trained adapter ({info.adapter}); train its base instead"
        )
    base_name = canonical(model)
    if Path(base_name).exists():  # a local directory: the manifest names its absolute path
        base_name = info.path
    stem = train_stem(base_name)
    try:
        the_task = get_task(task or DEFAULT_TASK)
    except KeyError as err:
        raise HarnessError(str(err.args[0])) from err
    task = the_task.name

    train_data = the_task.load(data, "train", limit=limit)
    val_data = the_task.load(data, "validation")
    test_data = the_task.load(data, "test")
    check_no_leak(train_data.samples, val_data.samples, test_data.samples)
    if not train_data.samples:
        raise HarnessError(f"task {task!r}: the train split of {data!r} is empty")

    # Data-parallel (torchrun / accelerate launch): one process per device; rank 0 names the output,
    # writes the manifest and runs the evaluation callback; the trainer averages the gradients.
    w = world()
    if w.size > 1 and device is None and planned_device(None) == "cuda":
        device = f"cuda:{w.local_rank}"
    join(planned_device(device))
    quiet = quiet or not w.main
    root = load_settings().train_dir
    if output_dir is None and resume:
        output_dir = _newest_unfinished(root, stem)
        if output_dir is None:
            raise HarnessError(
                f"--resume: no unfinished training of {base_name!r} under {root}; pass --output-dir"
            )
    if output_dir is None:
        output_dir = root / f"{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    output_dir = Path(broadcast(str(output_dir)))  # the clock of rank 0 names it for every rank
    if (output_dir / TRAIN_MANIFEST_FILE).exists() and not resume:
        if not overwrite:
            raise HarnessError(
                f"--output-dir {output_dir} already holds a finished adapter; --resume to train it on, "
                "--overwrite to replace it"
            )
        if w.main:
            shutil.rmtree(output_dir)  # a replaced adapter must not keep the old one's checkpoints
    barrier()

    net, processor, device = load_model_and_processor(
        info, device, load_adapter=False, quantization="nf4" if qlora else None
    )
    params = default_params(net, device, read_recipe(info.path) if Path(info.path).is_dir() else None)
    overrides: dict[str, Any] = {
        "epochs": epochs,
        "max_steps": max_steps,
        "lora_r": lora_r,
        "lr": lr,
        "batch_size": batch_size,
        "grad_accum": grad_accum,
        "eval_every": eval_every,
        "n_eval": n_eval,
        "save_steps": save_steps,
    }
    for key, value in overrides.items():
        if value is not None:
            setattr(params, key, value)
    # The in-training evaluation generates with the same budget `harness run` would use.
    tokenizer = getattr(processor, "tokenizer", processor)
    targets = val_data.info.budget_targets or [the_task.target(s) for s in val_data.samples]
    max_new_tokens = budget_for([len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in targets])
    if lora_r is not None:
        params.lora_alpha = 2 * lora_r  # keep the recipe's alpha / r = 2
    if not quiet:
        print(
            f"training {info.name} ({info.path}) on {len(train_data.samples)} {task} samples -> {output_dir}",
            file=sys.stderr,
        )

    result = train(
        net,
        processor,
        _examples(the_task, train_data.samples),
        _examples(the_task, val_data.samples),
        output_dir=output_dir,
        evaluate=evaluator(
            the_task,
            val_data.samples[: params.n_eval],
            processor,
            device,
            params.eval_batch_size,
            max_new_tokens,
        ),
        params=params,
        device=device,
        report_to=report_to,
        resume=resume,
        qlora=qlora,
        seed=seed,
        quiet=quiet,
        run_config={"model": info.model_dump(), "task": task, "data": train_data.info.model_dump()},
    )
    manifest = TrainManifest(
        base_model=base_name,
        base_path=info.path,
        revision=info.revision,
        family=info.family,
        task=task,
        data=train_data.info,
        validation=val_data.info,
        train_ids=sorted(s.id for s in train_data.samples),
        train_groups=sorted({s.group for s in train_data.samples if s.group}),
        validation_ids=sorted(s.id for s in val_data.samples),
        validation_groups=sorted({s.group for s in val_data.samples if s.group}),
        hyperparameters={
            **params.as_dict(),
            "qlora": qlora,
            "seed": seed,
            "device": device,
            "limit": limit,
            "max_new_tokens": max_new_tokens,
        },  # fmt: skip
        metrics={
            **result.metrics,
            "train_loss": result.train_loss,
            "history": result.history,
            "samples_per_s": result.samples_per_s,
            "peak_memory_gb": result.peak_memory_gb,
        },  # fmt: skip
        steps=result.steps,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    if w.main:  # the manifest last: an output directory with one holds a finished adapter
        write_atomic(output_dir / TRAIN_MANIFEST_FILE, manifest.model_dump_json(indent=2) + "\n")
    barrier()
    return result
