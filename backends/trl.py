"""Supervised fine-tuning of an image-text model with TRL's SFTTrainer and a LoRA adapter.

Knows nothing about any task: it gets examples (chat messages, target text, image path) and a
``metrics_fn(ids, outputs) -> {name: value}`` that judges generated answers.

What this gets right that the pipeline it replaces did not: every image goes through the
*processor* (so it reaches the model), labels are a fresh tensor that is -100 on prompt, image and
pad tokens, and progress is judged by generating answers, not only by the loss.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import ProcessorMixin, TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from harness.errors import HarnessError

MetricsFn = Callable[[list[str], list[str]], dict[str, float]]

# LoRA targets by family: the attention and MLP projections of the text model.
PHI3_TARGETS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
PROJECTOR_TARGETS = (r"img_projection\.[02]", r"multi_modal_projector\.linear_[12]")
# CLIP's own linears (the CookBook's optional vision targets).
VISION_TARGETS = (r"(vision_model|vision_tower)\..*\.(q_proj|k_proj|v_proj|out_proj|fc1|fc2)",)
LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Below this many parameters a model counts as a tiny, randomly initialised test model.
TINY_PARAMS = 50_000_000


@dataclass(frozen=True)
class Example:
    """One training or validation item: what the user says, what the model should answer, the image."""

    id: str
    messages: list[dict]
    target: str
    image: str  # local path


@dataclass
class TrainParams:
    """Hyper-parameters. The defaults are the Phi-3-Vision LoRA recipe for one GPU (see default_params)."""

    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    lr: float = 4e-5
    batch_size: int = 1
    grad_accum: int = 8
    lora_r: int = 64
    lora_alpha: int = 128
    lora_dropout: float = 0.05
    warmup_steps: int = 50
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    bf16: bool = True
    gradient_checkpointing: bool = True
    modules_to_save: list[str] | None = None
    lora_projector: bool = False  # also LoRA on the image projector (the CookBook's img_projection.0/.2)
    lora_vision: bool = False  # also LoRA on the vision tower's linears
    save_steps: int = 200
    save_total_limit: int | None = 2
    logging_steps: int = 10
    eval_every: int = 100  # generate on the validation slice every N optimizer steps (and at the end)
    n_eval: int = 32  # size of that fixed validation slice
    eval_batch_size: int = 8
    max_new_tokens: int = 64

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def default_params(model: torch.nn.Module, device: str) -> TrainParams:
    """Right for the model's size and the device.

    A real model on a GPU: the CookBook recipe (bf16, gradient checkpointing, lr 4e-5). A tiny random
    model on a CPU: fp32, no checkpointing, a high lr and trainable embeddings/head, without which
    LoRA on random weights barely learns.
    """
    cuda = str(device).startswith("cuda")
    bf16 = cuda and torch.cuda.is_bf16_supported()
    if count_params(model) < TINY_PARAMS:
        return TrainParams(
            epochs=6,
            lr=3e-3,
            batch_size=8,
            grad_accum=1,
            lora_r=16,
            lora_alpha=32,
            lora_dropout=0.0,
            warmup_steps=5,
            bf16=False,
            gradient_checkpointing=False,
            modules_to_save=_embedding_paths(model),
            # Random frozen image features and projector hide the image from a random text model.
            lora_projector=True,
            lora_vision=True,
            save_steps=50,
            logging_steps=5,
            eval_every=50,
            n_eval=16,
            max_new_tokens=40,
        )
    return TrainParams(bf16=bf16, gradient_checkpointing=cuda)


def _embedding_paths(model: torch.nn.Module) -> list[str]:
    """Full module paths of the text model's input embedding and output head.

    Full paths, because peft matches modules_to_save by suffix: a bare "embed_tokens" also catches
    Phi-3-V's ``vision_embed_tokens`` (the whole vision tower).
    """
    wanted = {id(model.get_input_embeddings()), id(model.get_output_embeddings())}
    return [name for name, module in model.named_modules() if id(module) in wanted]


def lora_target_regex(model: torch.nn.Module, *, projector: bool = False, vision: bool = False) -> str:
    """The text model's attention and MLP projections (and with ``projector``, the image projector's
    linears), found by the module names present.

    A regex (peft fullmatches it) rather than bare names, so the vision tower's own q_proj/k_proj/...
    are left alone: it is pretrained and the image features stay as the base model made them.
    """
    leaves = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    family = PHI3_TARGETS if "qkv_proj" in leaves else LLAMA_TARGETS
    found = [t for t in family if t in leaves]
    if not found:
        raise HarnessError(
            f"no LoRA target modules found in {type(model).__name__} (looked for {', '.join(family)})"
        )
    extra = (PROJECTOR_TARGETS if projector else ()) + (VISION_TARGETS if vision else ())
    text = rf"(?!.*(vision|img_)).*\.({'|'.join(found)})"
    return rf"^({text}|.*\.({'|'.join(extra)}))$" if extra else f"^{text}$"


# -- data ------------------------------------------------------------------------------------------------


def _tokenizer(processor):
    return getattr(processor, "tokenizer", processor)


def end_of_turn(tokenizer) -> tuple[str, list[int]]:
    """What follows the answer, as the chat template ends a turn: ``<|end|>\\n`` then eos for the
    Phi-3 family (``{answer}<|end|>\\n<|endoftext|>``, as the CookBook collator), else just eos."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise HarnessError(f"tokenizer {type(tokenizer).__name__} has no eos token")
    end = tokenizer.get_vocab().get("<|end|>")
    if end is None:
        return "", [eos]
    return "<|end|>\n", [] if eos == end else [eos]


def image_token_ids(model_or_processor) -> set[int]:
    """The placeholder ids an image occupies (besides negative ids, Phi-3-Vision's marker)."""
    ids = set()
    for obj in (model_or_processor, getattr(model_or_processor, "config", None)):
        for attr in ("image_token_id", "image_token_index"):
            value = getattr(obj, attr, None) if obj is not None else None
            if isinstance(value, int):
                ids.add(value)
    return ids


class VisionSFTCollator:
    """Turns examples into a right-padded training batch whose labels cover the answer only.

    Each prompt goes through the processor with its image (so pixel values and image tokens are
    real); the answer is tokenized on its own and its ids appended, so the prompt/answer boundary is
    exact whatever the tokenizer merges (pitfall 5). ``labels`` is a new tensor: the Phi-3-Vision
    reference model clamps ``input_ids`` in place, which would corrupt an aliased label tensor.
    """

    def __init__(self, processor, image_ids: set[int] | None = None):
        self.processor = processor
        self.tokenizer = _tokenizer(processor)
        self.end_text, self.end_ids = end_of_turn(self.tokenizer)
        self.image_ids = set(image_ids or ()) | image_token_ids(processor)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.tokenizer.eos_token_id

    def encode(self, example: dict) -> dict[str, torch.Tensor]:
        messages = example["messages"]
        if isinstance(messages, str):
            messages = json.loads(messages)
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        with Image.open(example.get("image_path") or example["image"]) as img:
            enc = self.processor(text=[prompt], images=[img.convert("RGB")], return_tensors="pt")
        prompt_ids = enc.pop("input_ids")[0]
        enc.pop("attention_mask", None)
        answer = self.tokenizer(example["target"] + self.end_text, add_special_tokens=False)["input_ids"]
        answer_ids = torch.tensor(list(answer) + self.end_ids, dtype=prompt_ids.dtype)
        input_ids = torch.cat([prompt_ids, answer_ids])
        labels = torch.cat([torch.full_like(prompt_ids, -100), answer_ids.clone()])
        masked = input_ids < 0  # Phi-3-Vision marks image slots with negative ids
        for token in self.image_ids:
            masked |= input_ids == token
        labels[masked] = -100
        return {"input_ids": input_ids, "labels": labels, **dict(enc)}

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        items = [self.encode(f) for f in features]
        width = max(len(i["input_ids"]) for i in items)
        batch: dict[str, Any] = {
            "input_ids": torch.full((len(items), width), self.pad_id, dtype=items[0]["input_ids"].dtype),
            "attention_mask": torch.zeros((len(items), width), dtype=torch.long),
            "labels": torch.full((len(items), width), -100, dtype=torch.long),
        }
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            batch["input_ids"][row, :n] = item["input_ids"]
            batch["attention_mask"][row, :n] = 1
            batch["labels"][row, :n] = item["labels"]
        for key in items[0]:  # image tensors: one row per example
            if key not in batch:
                batch[key] = torch.cat([torch.as_tensor(i[key]) for i in items])
        return batch


def to_dataset(examples: list[Example]):
    from datasets import Dataset

    # Messages travel as JSON: Arrow would otherwise unify the content dicts and add `text: None`.
    # "image_path", not "image": TRL would take an "image" column for its own vision pipeline.
    return Dataset.from_list(
        [
            {"id": e.id, "messages": json.dumps(e.messages), "target": e.target, "image_path": e.image}
            for e in examples
        ]
    )


# -- generation ------------------------------------------------------------------------------------------


def generate(
    model, processor, examples: list[Example], *, max_new_tokens: int, batch_size: int = 8, info=None
) -> list[str]:
    """Greedy answers through the evaluation backend's own generator (the same code `harness run` uses)."""
    from backends.hf import HFGenerator

    was_training = model.training
    model.eval()
    gen = HFGenerator(model, processor, str(next(model.parameters()).device), info)
    outputs: list[str] = []
    try:
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            images = []
            for ex in chunk:
                with Image.open(ex.image) as img:
                    images.append([img.convert("RGB")])
            answers = gen.generate([gen.render(ex.messages) for ex in chunk], images, max_new_tokens)
            outputs += [a.text for a in answers]
    finally:
        model.train(was_training)
    return outputs


class GenerationEvalCallback(TrainerCallback):
    """Every ``params.eval_every`` steps and at the last step: generate on a fixed validation slice, judge it.

    The metrics go through ``trainer.log`` as ``eval_<name>`` so every reporter (W&B: ``eval/<name>``)
    sees them next to the loss; with W&B a table of images, truths and predictions is logged too.
    """

    def __init__(
        self,
        processor,
        examples: list[Example],
        metrics_fn: MetricsFn,
        params: TrainParams,
        info=None,
        table_rows=8,
    ):
        self.processor = processor
        self.info = info
        self.examples = examples
        self.metrics_fn = metrics_fn
        self.params = params
        self.table_rows = table_rows
        self.trainer = None  # set once the trainer exists: trainer.log is how metrics reach every reporter
        self.history: list[dict[str, Any]] = []
        self.last: dict[str, float] = {}
        self._done_step = -1

    def on_step_end(self, args, state, control, model=None, **kwargs):
        last = state.global_step >= state.max_steps
        if (self.params.eval_every > 0 and state.global_step % self.params.eval_every == 0) or last:
            should_log = control.should_log
            self.evaluate(model, state.global_step)
            control.should_log = should_log  # trainer.log() clears it: the step's loss must still be logged
        return control

    def evaluate(self, model, step: int) -> dict[str, float]:
        if step == self._done_step or not self.examples:
            return self.last
        outputs = generate(
            model,
            self.processor,
            self.examples,
            max_new_tokens=self.params.max_new_tokens,
            batch_size=self.params.eval_batch_size,
            info=self.info,
        )
        metrics = {k: float(v) for k, v in self.metrics_fn([e.id for e in self.examples], outputs).items()}
        self.last, self._done_step = metrics, step
        self.history.append({"step": step, **metrics})
        if self.trainer is not None:
            self.trainer.log({f"eval_{k}": v for k, v in metrics.items()})
        self._log_table(outputs, step)
        return metrics

    def _log_table(self, outputs: list[str], step: int) -> None:
        wandb = sys.modules.get("wandb")  # only when this run reports to W&B
        if wandb is None or wandb.run is None:
            return
        table = wandb.Table(columns=["step", "id", "image", "truth", "prediction"])
        for ex, out in list(zip(self.examples, outputs, strict=True))[: self.table_rows]:
            table.add_data(int(step), str(ex.id), wandb.Image(ex.image), str(ex.target), str(out))
        wandb.log({"eval/samples": table}, commit=False)


class _StopAfter(TrainerCallback):
    """Stops training cleanly after a given step (used by tests to simulate an interruption)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
        return control


# -- training --------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    metrics: dict[str, float] = field(default_factory=dict)  # the final generation metrics
    history: list[dict[str, Any]] = field(default_factory=list)
    train_loss: float | None = None
    samples_per_s: float | None = None
    wandb_dir: str | None = None


def check_qlora(device: str) -> None:
    """QLoRA needs a CUDA GPU and bitsandbytes: say so plainly instead of failing deep inside."""
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        raise HarnessError(
            "--qlora needs a CUDA GPU (bitsandbytes 4-bit); none is available here, train without it"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise HarnessError("--qlora needs bitsandbytes: pip install bitsandbytes") from err


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


def train(
    model,
    processor,
    train_examples: list[Example],
    val_examples: list[Example],
    *,
    output_dir: str | Path,
    metrics_fn: MetricsFn,
    params: TrainParams | None = None,
    device: str = "cpu",
    report_to: str = "none",
    resume: bool = False,
    qlora: bool = False,
    seed: int = 0,
    model_info=None,
    run_config: dict[str, Any] | None = None,
    wandb_project: str = "harness",
    callbacks: Sequence[TrainerCallback] = (),
) -> TrainResult:
    """Fine-tune a LoRA adapter on ``train_examples``; judge it by generating on ``val_examples``.

    ``model`` is a plain (non-peft) model already on ``device``; with ``qlora`` it must have been loaded
    in 4-bit. ``model_info`` (a harness.schema.ModelInfo) tells the generator the model family. Checkpoints go to ``output_dir/checkpoint-N`` every ``params.save_steps``; ``resume``
    continues from the newest one. At the end the adapter and the processor are saved in ``output_dir``.
    """
    from peft import LoraConfig, prepare_model_for_kbit_training
    from trl import SFTConfig, SFTTrainer

    if report_to not in ("none", "wandb"):
        raise HarnessError(f"report_to must be 'none' or 'wandb', not {report_to!r}")
    params = params or default_params(model, device)
    output_dir = Path(output_dir)
    checkpoint = None
    if resume:
        checkpoint = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
        if checkpoint is None:
            raise HarnessError(f"--resume: no checkpoint-N directory in {output_dir} to resume from")
    if qlora:
        check_qlora(device)
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=params.gradient_checkpointing
        )
    # Images were checked (fully decoded) when the task loaded its splits: bad ones are excluded and counted.
    if not train_examples:
        raise HarnessError("no training examples")
    val_slice = val_examples[: params.n_eval]

    run = None
    if report_to == "wandb":
        config = {"harness": run_config or {}, "params": params.as_dict(), "n_train": len(train_examples)}
        run = setup_wandb(wandb_project, output_dir.name, config, output_dir)

    use_cpu = not str(device).startswith("cuda")
    args = SFTConfig(
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
        disable_tqdm=False,
    )
    lora = LoraConfig(
        r=params.lora_r,
        lora_alpha=params.lora_alpha,
        lora_dropout=params.lora_dropout,
        target_modules=lora_target_regex(model, projector=params.lora_projector, vision=params.lora_vision),
        modules_to_save=params.modules_to_save,
        task_type="CAUSAL_LM",
    )
    evaluator = GenerationEvalCallback(processor, val_slice, metrics_fn, params, info=model_info)
    processing_class = processor if isinstance(processor, ProcessorMixin) else _tokenizer(processor)
    trainer = SFTTrainer(
        model=model,
        args=args,
        data_collator=VisionSFTCollator(processor, image_token_ids(model)),
        train_dataset=to_dataset(train_examples),
        processing_class=processing_class,
        peft_config=lora,
        callbacks=[evaluator, *callbacks],
    )
    evaluator.trainer = trainer
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
        )
    finally:
        if run is not None:
            result_dir = run.dir
            run.finish()
            if os.environ.get("WANDB_MODE") == "offline":
                print(
                    f"W&B ran offline; upload later with: wandb sync {Path(result_dir).parent}",
                    file=sys.stderr,
                )
    if run is not None:
        result.wandb_dir = str(Path(result_dir).parent)
    if math.isnan(result.train_loss or 0.0):
        raise HarnessError(f"training diverged (loss is NaN) in {output_dir}")
    return result
