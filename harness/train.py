"""`harness train`: fine-tune a LoRA adapter on a task's train split, judged on its validation split.

The test split is never trained or validated on: it is loaded only to prove that no sample id and
no product group of it is among the training or validation samples. The adapter lands in
``<train_dir>/<base>-<YYYYmmdd-HHMMSS>/`` with a ``harness-train.json`` manifest, which is what
``--model <base>-tuned`` resolves to.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.schema import TRAIN_MANIFEST_FILE, ModelInfo, Record, Sample, TrainManifest


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


def metrics_fn_for(task, samples: list[Sample]):
    """Judge generated answers exactly as `harness run` does: the task's parser, scorers and aggregate."""
    by_id = {s.id: s for s in samples}

    def metrics(ids: list[str], outputs: list[str]) -> dict[str, float]:
        records = []
        for sid, text in zip(ids, outputs, strict=True):
            sample = by_id[sid]
            parsed = task.parse(text)
            scores = task.score(sample.truth, parsed)
            records.append(
                Record(
                    id=sid,
                    image=sample.image,
                    prompt="",
                    output=text,
                    parsed=parsed,
                    truth=sample.truth,
                    scores=scores,
                )
            )
        aggregates, _ = task.aggregate(records)
        return {k: v.value for k, v in aggregates.items() if v.value is not None}

    return metrics


def _examples(task, samples: list[Sample]):
    from backends.trl import Example

    return [
        Example(id=s.id, messages=task.messages(s), target=task.target(s), image=s.image) for s in samples
    ]


def _load(info: ModelInfo, device: str | None, qlora: bool):
    from backends.hf import load_model_and_processor, pick_device

    device = pick_device(device)
    if not qlora:
        return load_model_and_processor(info, device, load_adapter=False)
    from backends.trl import check_qlora

    check_qlora(device)
    import torch
    from transformers import BitsAndBytesConfig

    bnb = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    if info.family == "phi3v":
        from backends.phi3v.modeling import Phi3VForCausalLM
        from backends.phi3v.processing import Phi3VProcessor

        processor = Phi3VProcessor.from_pretrained(info.path, num_crops=info.num_crops)
        model_cls = Phi3VForCausalLM
    else:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        processor = AutoProcessor.from_pretrained(info.path, revision=info.revision)
        model_cls = AutoModelForImageTextToText
    model = model_cls.from_pretrained(
        info.path, revision=info.revision, quantization_config=bnb, device_map={"": device}
    )
    return model, processor, device


def _newest_unfinished(root: Path, base: str) -> Path | None:
    """For --resume without --output-dir: the newest run of this base that has checkpoints but no manifest."""
    runs = [
        d
        for d in sorted(root.glob(f"{base}-*"))
        if not (d / TRAIN_MANIFEST_FILE).exists() and any(d.glob("checkpoint-*"))
    ]
    return runs[-1] if runs else None


def _write_manifest(path: Path, manifest: TrainManifest) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(manifest.model_dump_json(indent=2) + "\n")
    os.replace(tmp, path)  # atomic: a manifest is whole or absent


def train_cmd_impl(
    model: str = "base",
    task: str = "burberry",
    data: str = "hub",
    epochs: float | None = None,
    max_steps: int | None = None,
    lora_r: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    grad_accum: int | None = None,
    qlora: bool = False,
    output_dir: Path | str | None = None,
    resume: bool = False,
    report_to: str = "none",
    seed: int = 0,
    eval_every: int | None = None,
    n_eval: int | None = None,
    limit: int | None = None,
    device: str | None = None,
    save_steps: int | None = None,
    revision: str | None = None,
) -> Path:
    """Train ``model`` on ``task``'s train split; return the output directory (adapter + manifest)."""
    from backends.trl import default_params, train
    from harness.models import canonical, load_settings, resolve
    from tasks import get_task

    if epochs is not None and max_steps is not None:
        raise HarnessError("give --epochs or --max-steps, not both")
    info = resolve(model, revision=revision)
    if info.adapter:
        raise HarnessError(
            f"model {model!r} is already a trained adapter ({info.adapter}); train its base instead"
        )
    base_name = canonical(model)
    if Path(base_name).exists():  # a local directory: the manifest names its absolute path
        base_name = info.path
    stem = Path(base_name).name if Path(base_name).exists() else base_name.replace("/", "--")
    try:
        the_task = get_task(task)
    except KeyError as err:
        raise HarnessError(str(err.args[0])) from err

    train_data = the_task.load(data, "train", seed=seed, limit=limit)
    val_data = the_task.load(data, "validation", seed=seed)
    test_data = the_task.load(data, "test", seed=seed)
    check_no_leak(train_data.samples, val_data.samples, test_data.samples)
    if not train_data.samples:
        raise HarnessError(f"task {task!r}: the train split of {data!r} is empty")

    root = load_settings().train_dir
    if output_dir is None and resume:
        output_dir = _newest_unfinished(root, stem)
        if output_dir is None:
            raise HarnessError(
                f"--resume: no unfinished training of {base_name!r} under {root}; pass --output-dir"
            )
    if output_dir is None:
        output_dir = root / f"{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    output_dir = Path(output_dir)

    net, processor, device = _load(info, device, qlora)
    params = default_params(net, device)
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
    if lora_r is not None:
        params.lora_alpha = 2 * lora_r  # keep the recipe's alpha / r = 2
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
        metrics_fn=metrics_fn_for(the_task, val_data.samples),
        params=params,
        device=device,
        report_to=report_to,
        resume=resume,
        qlora=qlora,
        seed=seed,
        model_info=info,
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
        hyperparameters={**params.as_dict(), "qlora": qlora, "seed": seed, "device": device, "limit": limit},
        metrics={**result.metrics, "train_loss": result.train_loss, "history": result.history},
        steps=result.steps,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    _write_manifest(output_dir / TRAIN_MANIFEST_FILE, manifest)
    return output_dir
