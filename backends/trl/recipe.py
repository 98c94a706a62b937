"""The training recipe: hyper-parameters, LoRA targets, and a family's and a model directory's overrides.

The defaults are the Phi-3-Vision LoRA recipe for one GPU (the Phi-3 CookBook's: bf16, gradient
checkpointing, lr 4e-5, r 64). A model family may override them for its checkpoints
(backends/families), and a model directory may ship ``harness-recipe.json`` for itself: the tiny
random test models do (a high lr and trainable embeddings, without which LoRA on random weights
barely learns); no size threshold or test knowledge lives here.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from backends.base import RECIPE_FILE
from backends.families import family_of
from harness.core.errors import HarnessError

EMBEDDINGS = "embeddings"  # in a recipe's modules_to_save: the text model's input embedding and head


@dataclass
class TrainParams:
    """Hyper-parameters: the Phi-3-Vision LoRA recipe for one GPU unless a recipe overrides them."""

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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def read_recipe(model_dir: str | Path) -> dict[str, Any]:
    """The overrides a model directory ships for its own training ({} when it ships none)."""
    path = Path(model_dir) / RECIPE_FILE
    if not path.is_file():
        return {}
    try:
        recipe = json.loads(path.read_text())
    except ValueError as err:
        raise HarnessError(f"{path}: not valid JSON: {err}") from err
    known = {f.name for f in fields(TrainParams)}
    unknown = sorted(set(recipe) - known)
    if unknown:
        raise HarnessError(
            f"{path}: unknown setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
        )
    return recipe


def default_params(model: torch.nn.Module, device: str, recipe: dict[str, Any] | None = None) -> TrainParams:
    """The recipe for ``device`` (bf16 and gradient checkpointing on a GPU only: on a CPU they raise
    or crawl), with the model family's overrides, then the model directory's own, on top."""
    cuda = str(device).startswith("cuda")
    params = TrainParams(bf16=cuda and torch.cuda.is_bf16_supported(), gradient_checkpointing=cuda)
    for key, value in {**family_of(model).recipe, **(recipe or {})}.items():
        if key == "modules_to_save" and value == EMBEDDINGS:
            value = embedding_paths(model)
        setattr(params, key, value)
    return params


def embedding_paths(model: torch.nn.Module) -> list[str]:
    """Full module paths of the text model's input embedding and output head.

    Full paths, because peft matches modules_to_save by suffix: a bare "embed_tokens" also catches
    Phi-3-V's ``vision_embed_tokens`` (the whole vision tower).
    """
    wanted = {id(model.get_input_embeddings()), id(model.get_output_embeddings())}
    return [name for name, module in model.named_modules() if id(module) in wanted]


def lora_target_regex(model: torch.nn.Module, *, projector: bool = False, vision: bool = False) -> str:
    """The text model's linears the model's family names (and with ``projector`` / ``vision``, the
    image projector's / the vision tower's), found by the module names present.

    A regex (peft fullmatches it) rather than bare names, so the image path's own q_proj/k_proj/...
    are left alone: it is pretrained and the image features stay as the base model made them.
    """
    family = family_of(model)
    leaves = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    found = [t for t in family.lora_text if t in leaves]
    if not found:
        raise HarnessError(
            f"no LoRA target modules found in {type(model).__name__} (its family {family.name!r} names "
            f"{', '.join(family.lora_text)})"
        )
    extra = (family.lora_projector if projector else ()) + (family.lora_vision if vision else ())
    image = "|".join(map(re.escape, family.image_modules))
    text = (rf"(?!(.*\.)?({image})\.)" if image else "") + rf".*\.({'|'.join(found)})"
    return rf"^({text}|.*\.({'|'.join(extra)}))$" if extra else f"^{text}$"
