"""The trainer wiring: TRL's SFTTrainer + a peft LoRA adapter, W&B offline by default, resume, QLoRA.

Every image goes through the *processor* (so it reaches the model), labels are a fresh tensor that
is -100 on prompt, image and pad tokens (the collator), and progress is judged by generating
answers (the callback), not by the loss alone.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import ProcessorMixin, TrainerCallback, set_seed
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import get_last_checkpoint

from backends.devices import peak_memory_gb
from backends.trl.callback import CompactProgress, Evaluate, GenerationEvalCallback
from backends.trl.collator import Example, VisionSFTCollator, _tokenizer, image_token_ids, to_dataset
from backends.trl.recipe import TrainParams, default_params, lora_target_regex
from harness.core.errors import HarnessError


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    metrics: dict[str, float] = field(default_factory=dict)  # the final generation metrics
    history: list[dict[str, Any]] = field(default_factory=list)
    train_loss: float | None = None
    samples_per_s: float | None = None
    peak_memory_gb: float | None = None  # on a GPU: the most memory training allocated
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, training loss) as logged
    wandb_dir: str | None = None


def _checkpointing_args(config_cls, enabled: bool) -> dict[str, Any]:
    """transformers 5.x renamed gradient_checkpointing to activation_checkpointing (the old name warns)."""
    name = (
        "activation_checkpointing"
        if "activation_checkpointing" in config_cls.__dataclass_fields__
        else "gradient_checkpointing"
    )
    return {name: enabled, f"{name}_kwargs": {"use_reentrant": False} if enabled else None}


def setup_wandb(project: str, name: str, config: dict[str, Any], directory: Path):
    """Start a W&B run; without an API key (and no WANDB_MODE chosen) it runs offline, to sync later."""
    import wandb

    if not os.environ.get("WANDB_API_KEY") and not os.environ.get("WANDB_MODE"):
        os.environ["WANDB_MODE"] = "offline"
    directory.mkdir(parents=True, exist_ok=True)
    return wandb.init(project=project, name=name, config=config, dir=str(directory), reinit="finish_previous")


def _last_checkpoint(output_dir: Path) -> str:
    checkpoint = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    if checkpoint is None:
        raise HarnessError(f"--resume: no checkpoint-N directory in {output_dir} to resume from")
    return checkpoint


def _finish_wandb(run) -> str | None:
    """End the W&B run (if any); its directory, and how to upload it when it ran offline."""
    if run is None:
        return None
    directory = str(Path(run.dir).parent)
    run.finish()
    if os.environ.get("WANDB_MODE") == "offline":
        print(f"W&B ran offline; upload later with: wandb sync {directory}", file=sys.stderr)
    return directory


def _sft_config(params: TrainParams, output_dir: Path, device: str, report_to: str, seed: int, quiet: bool):
    """TRL's SFTConfig from the recipe: the trainer's loop, the harness's judgement (no eval loss)."""
    from trl import SFTConfig

    use_cpu = not str(device).startswith("cuda")
    rank = int(os.environ.get("RANK", 0))
    distributed = int(os.environ.get("WORLD_SIZE", 1)) > 1
    return SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=params.epochs,
        max_steps=params.max_steps,
        per_device_train_batch_size=params.batch_size,
        gradient_accumulation_steps=params.grad_accum,
        learning_rate=params.lr,
        lr_scheduler_type="linear",
        warmup_steps=params.warmup_steps,
        weight_decay=params.weight_decay,
        adam_beta1=params.adam_beta1,
        adam_beta2=params.adam_beta2,
        bf16=params.bf16,
        fp16=False,
        **_checkpointing_args(SFTConfig, params.gradient_checkpointing),
        logging_steps=params.logging_steps,
        save_strategy="steps",
        save_steps=params.save_steps,
        save_total_limit=params.save_total_limit,
        eval_strategy="no",  # judged by generation (the callback), not teacher-forced loss alone
        report_to=[] if report_to == "none" else ["wandb"],
        run_name=output_dir.name,
        seed=seed,
        data_seed=seed,
        use_cpu=use_cpu,
        remove_unused_columns=False,  # the collator needs messages, target and image
        dataset_kwargs={"skip_prepare_dataset": True},
        max_length=None,
        dataloader_num_workers=0,
        disable_tqdm=quiet or rank != 0,
        # DDP: gloo on a CPU. LoRA on the vision tower also reaches layers no forward uses (Phi-3-V
        # reads CLIP's second-to-last layer): their parameters get no gradient, which DDP must expect.
        ddp_backend=None if not distributed else ("nccl" if not use_cpu else "gloo"),
        ddp_find_unused_parameters=params.lora_vision if distributed else None,
        log_level="error",  # the harness shows its own compact line per logging step
    )


def _lora_config(model, params: TrainParams):
    from peft import LoraConfig

    return LoraConfig(
        r=params.lora_r,
        lora_alpha=params.lora_alpha,
        lora_dropout=params.lora_dropout,
        target_modules=lora_target_regex(model, projector=params.lora_projector, vision=params.lora_vision),
        modules_to_save=params.modules_to_save,
        task_type="CAUSAL_LM",
    )


def train(
    model,
    processor,
    train_examples: list[Example],
    val_examples: list[Example],
    *,
    output_dir: str | Path,
    evaluate: Evaluate | None = None,
    params: TrainParams | None = None,
    device: str = "cpu",
    report_to: str = "none",
    resume: bool = False,
    qlora: bool = False,
    seed: int = 0,
    run_config: dict[str, Any] | None = None,
    wandb_project: str = "harness",
    callbacks: Sequence[TrainerCallback] = (),
    quiet: bool = False,
) -> TrainResult:
    """Fine-tune a LoRA adapter on ``train_examples``; judge it with ``evaluate`` as it trains.

    ``model`` is a plain (non-peft) model already on ``device``; with ``qlora`` it was loaded in
    4-bit. Checkpoints go to ``output_dir/checkpoint-N`` every ``params.save_steps``; ``resume``
    continues from the newest one. At the end the adapter and the processor are saved in
    ``output_dir``. ``val_examples`` are not trained on (kept for the caller's records).
    """
    from peft import prepare_model_for_kbit_training
    from trl import SFTTrainer

    params = params or default_params(model, device)
    output_dir = Path(output_dir)
    checkpoint = _last_checkpoint(output_dir) if resume else None
    if qlora:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=params.gradient_checkpointing
        )
    # Images were checked (fully decoded) when the task loaded its splits: bad ones are excluded and counted.
    if not train_examples:
        raise HarnessError("no training examples")

    run = None
    if report_to == "wandb" and int(os.environ.get("RANK", 0)) == 0:  # one W&B run, from the main process
        config = {"harness": run_config or {}, "params": params.as_dict(), "n_train": len(train_examples)}
        run = setup_wandb(wandb_project, output_dir.name, config, output_dir)
    evaluator = GenerationEvalCallback(evaluate or (lambda model: ({}, [])), params.eval_every)
    processing_class = processor if isinstance(processor, ProcessorMixin) else _tokenizer(processor)
    set_seed(seed)  # LoRA init is random: seed it before SFTTrainer wraps the model (trl < 1.16 does not)
    trainer = SFTTrainer(
        model=model,
        args=_sft_config(params, output_dir, device, report_to, seed, quiet),
        data_collator=VisionSFTCollator(processor, image_token_ids(model)),
        train_dataset=to_dataset(train_examples),
        processing_class=processing_class,
        peft_config=_lora_config(model, params),
        callbacks=[evaluator, *callbacks],
    )
    evaluator.trainer = trainer
    for raw in (ProgressCallback, PrinterCallback):  # they print every log as a raw dict
        trainer.remove_callback(raw)
    if not quiet:
        trainer.add_callback(CompactProgress)
    try:
        out = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model(str(output_dir))  # the adapter (+ modules_to_save) and processing class
        if processing_class is not processor:
            processor.save_pretrained(str(output_dir))
        metrics = out.metrics
        result = TrainResult(
            output_dir=output_dir,
            steps=trainer.state.global_step,
            metrics=dict(evaluator.last),
            history=list(evaluator.history),
            train_loss=metrics.get("train_loss"),
            samples_per_s=metrics.get("train_samples_per_second"),
            peak_memory_gb=peak_memory_gb(device),
            losses=[(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h and "step" in h],
        )
    finally:
        wandb_dir = _finish_wandb(run)
    result.wandb_dir = wandb_dir
    if math.isnan(result.train_loss or 0.0):
        raise HarnessError(f"training diverged (loss is NaN) in {output_dir}")
    return result
