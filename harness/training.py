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
from typing import TYPE_CHECKING

from backends.devices import planned_device
from harness.core.errors import HarnessError
from harness.core.leakage import check_disjoint
from harness.core.schema import TRAIN_MANIFEST_FILE, ModelInfo, Sample, TrainManifest
from harness.core.store import write_atomic
from harness.distributed import barrier, broadcast, join, world
from harness.generation import budget, generate_records
from harness.models import canonical, load_settings, resolve, train_output_re, train_stem
from harness.options import TrainOptions
from tasks import DEFAULT_TASK, get_task

if TYPE_CHECKING:
    from backends.trl import TrainResult


def evaluator(task, samples: list[Sample], processor, device: str, batch_size: int, max_new_tokens: int):
    """``evaluate(model)`` for the training callback: the validation slice through the one generation
    loop of `harness run` (harness/generation.py), judged by the task's own parser, scorers and
    aggregate, so a number seen during training means what it means in a run."""
    from backends.hf import HFGenerator

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
    shape = train_output_re(stem)
    runs = [
        d
        for d in sorted(root.glob(f"{stem}-*"))
        if shape.match(d.name) and not (d / TRAIN_MANIFEST_FILE).exists() and any(d.glob("checkpoint-*"))
    ]
    return runs[-1] if runs else None


def run_training(
    model: str = "base", task: str | None = None, options: TrainOptions | None = None
) -> TrainResult:
    """Train ``model`` on ``task``'s train split; the result's ``output_dir`` holds adapter + manifest.

    ``options`` (harness.options.TrainOptions): data, epochs or max_steps, LoRA rank, lr, batch size,
    QLoRA, output directory, resume/overwrite, W&B, seed, ...
    """
    from backends.hf import load_model_and_processor
    from backends.trl import default_params, read_recipe, train

    options = options or TrainOptions()
    info, base_name = _base_model(model, options.revision)
    the_task = get_task(task or DEFAULT_TASK)
    splits = {split: the_task.load(options.data, split, limit=options.limit if split == "train" else None) for split in ("train", "validation", "test")}  # fmt: skip
    train_data, val_data = splits["train"], splits["validation"]
    check_disjoint(
        train_data.samples + val_data.samples,
        splits["test"].samples,
        "the test split are in train/validation",
    )
    if not train_data.samples:
        raise HarnessError(f"task {the_task.name!r}: the train split of {options.data!r} is empty")

    # Data-parallel (torchrun / accelerate launch): one process per device; rank 0 names the output,
    # writes the manifest and runs the evaluation callback; the trainer averages the gradients.
    w = world()
    device = options.device
    if w.size > 1 and device is None and planned_device(None) == "cuda":
        device = f"cuda:{w.local_rank}"
    join(planned_device(device))
    quiet = options.quiet or not w.main
    output_dir = _output_dir(base_name, options, w)

    net, processor, device = load_model_and_processor(
        info, device, load_adapter=False, quantization="nf4" if options.qlora else None
    )
    params = default_params(net, device, read_recipe(info.path) if Path(info.path).is_dir() else None)
    for key in ("epochs", "max_steps", "lora_r", "lr", "batch_size", "grad_accum", "eval_every", "n_eval", "save_steps"):  # fmt: skip
        if getattr(options, key) is not None:
            setattr(params, key, getattr(options, key))
    if options.lora_r is not None:
        params.lora_alpha = 2 * options.lora_r  # keep the recipe's alpha / r = 2
    # The in-training evaluation generates with the same budget `harness run` would use.
    tokenizer = getattr(processor, "tokenizer", processor)
    max_new_tokens = budget(
        lambda t: len(tokenizer(t, add_special_tokens=False)["input_ids"]), the_task, val_data
    )
    if not quiet:
        print(f"training {info.name} ({info.path}) on {len(train_data.samples)} {the_task.name} samples -> {output_dir}", file=sys.stderr)  # fmt: skip

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
        ),  # fmt: skip
        params=params,
        device=device,
        report_to=options.report_to,
        resume=options.resume,
        qlora=options.qlora,
        seed=options.seed,
        quiet=quiet,
        run_config={"model": info.model_dump(), "task": the_task.name, "data": train_data.info.model_dump()},
    )
    if w.main:  # the manifest last: an output directory with one holds a finished adapter
        manifest = _manifest(info, base_name, the_task.name, train_data, val_data, params, options, device, max_new_tokens, result)  # fmt: skip
        write_atomic(output_dir / TRAIN_MANIFEST_FILE, manifest.model_dump_json(indent=2) + "\n")
    barrier()
    return result


def _base_model(model: str, revision: str | None) -> tuple[ModelInfo, str]:
    """What to train, and the name its manifest records as the base (a local directory: its path)."""
    info = resolve(model, revision=revision)
    if info.adapter:
        raise HarnessError(
            f"model {model!r} is already a trained adapter ({info.adapter}); train its base instead"
        )
    base_name = canonical(model)
    return info, info.path if Path(base_name).exists() else base_name


def _output_dir(base_name: str, options: TrainOptions, w) -> Path:
    """Where the adapter goes: --output-dir, the newest unfinished run (--resume), or a new timestamped
    directory (rank 0's clock names it for every rank). A finished adapter is never silently replaced."""
    stem, root = train_stem(base_name), load_settings().train_dir
    output_dir = options.output_dir
    if output_dir is None and options.resume:
        output_dir = _newest_unfinished(root, stem)
        if output_dir is None:
            raise HarnessError(
                f"--resume: no unfinished training of {base_name!r} under {root}; pass --output-dir"
            )
    if output_dir is None:
        output_dir = root / f"{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    output_dir = Path(broadcast(str(output_dir)))
    if (output_dir / TRAIN_MANIFEST_FILE).exists() and not options.resume:
        if not options.overwrite:
            raise HarnessError(
                f"--output-dir {output_dir} already holds a finished adapter; --resume to train it on, "
                "--overwrite to replace it"
            )
        if w.main:
            shutil.rmtree(output_dir)  # a replaced adapter must not keep the old one's checkpoints
    barrier()
    return output_dir


def _manifest(
    info, base_name, task, train_data, val_data, params, options, device, max_new_tokens, result
) -> TrainManifest:
    """harness-train.json: what was trained on what, with which settings, and how it ended."""
    return TrainManifest(
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
            "qlora": options.qlora,
            "seed": options.seed,
            "device": device,
            "limit": options.limit,
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
