"""Model families: what the harness knows about each kind of model, declared once per family.

A family is one module of this package that calls :func:`register`: its config ``model_type``\\ s,
how its checkpoints load (native code or transformers' Auto classes), the named models it offers
(hub id at a pinned revision, or a tiny one built offline), the tokens that end an answer, where
LoRA goes, which modules stay out of 4-bit and out of text LoRA (the image path), and its training
recipe. A new family is one module plus its name in ``FAMILY_MODULES``.

Importing a family module must stay cheap (no torch): `harness models` lists them all.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

from harness.core.errors import HarnessError

FAMILY_MODULES = (
    "phi3v", "llava", "qwen2_5_vl", "qwen3_vl", "gemma3", "smolvlm", "llava_onevision", "llava_next", "internvl",
    "served", "unsupported",
)  # fmt: skip
GENERIC = "hf"  # any transformers image-text model through the Auto classes
# The text model's attention and MLP projections in Llama-like decoders (most families).
LLAMA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class NamedModel:
    """A model users call by name (``--model phi-3-vision``)."""

    name: str
    description: str
    path: str | None = None  # hub id
    # The commit of the hub repository it loads (a published commit, pinned so a named model cannot
    # change under a benchmark); harness.toml [revisions] or --revision choose another.
    revision: str | None = None
    num_crops: int | None = None
    build: Callable[[Path, Iterable[str]], Path] | None = None  # a tiny model built offline (dir, corpus)


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    model_types: tuple[str, ...] = ()  # config.json "model_type" values of its checkpoints
    backend: str = "hf"  # "hf": transformers in this process; "api": a served model over HTTP
    # (directory, num_crops, **from_pretrained) -> (model, processor); None: the Auto classes.
    load: Callable[..., tuple[Any, Any]] | None = None
    load_processor: Callable[..., Any] | None = None  # (directory, num_crops) -> processor, with `load`
    stop_tokens: tuple[str, ...] = ()  # tokens that end an answer besides the model's own eos
    lora_text: tuple[str, ...] = LLAMA_LINEARS  # leaf names of the text model's linears LoRA adapts
    image_modules: tuple[str, ...] = ()  # vision tower and projector: out of 4-bit and of text LoRA
    lora_projector: tuple[str, ...] = ()  # regexes of the projector's linears (recipe: lora_projector)
    lora_vision: tuple[str, ...] = ()  # regexes of the vision tower's linears (recipe: lora_vision)
    recipe: dict[str, Any] = field(default_factory=dict)  # training overrides for the family's checkpoints
    video: bool = False  # its processor has a video half, which needs torchvision (even for images)
    # --max-image-tokens: (processor, cap) -> an iterator that sets the family's own image setting
    # smaller at each step (yielding what it set) until an image fits; None: a fixed count per image.
    image_budget: Callable[[Any, int], Iterator[str]] | None = None
    models: tuple[NamedModel, ...] = ()
    unsupported: str | None = None  # why the harness cannot evaluate it (said in one line)

    @property
    def served(self) -> bool:
        return self.backend == "api"

    @property
    def not_quantized(self) -> tuple[str, ...]:
        """Kept out of 4-bit: a frozen vision tower in NF4 loses the image, and the output head."""
        return (*self.image_modules, "lm_head")


_REGISTRY: dict[str, Family] = {}


def register(family: Family) -> Family:
    _REGISTRY[family.name] = family
    return family


def families() -> dict[str, Family]:
    """Every registered family by name (the built-in modules are imported on first use)."""
    if not _REGISTRY.get(GENERIC):
        register(
            Family(
                GENERIC,
                "any transformers image-text model (AutoModelForImageTextToText)",
                image_modules=("vision_tower", "vision_model", "visual", "multi_modal_projector"),
            )
        )
        for name in FAMILY_MODULES:
            import_module(f"{__name__}.{name}")
    return _REGISTRY


def get_family(name: str) -> Family:
    found = families().get(name)
    if found is None:
        raise HarnessError(f"unknown model family {name!r}; valid: {', '.join(sorted(families()))}")
    return found


def family_for_model_type(model_type: str | None) -> Family:
    """The family whose checkpoints have this config ``model_type``; the generic one for the rest."""
    for family in families().values():
        if model_type in family.model_types:
            return family
    return families()[GENERIC]


def model_type_of_dir(path: str | Path) -> str | None:
    """The ``model_type`` a local model directory's config.json declares (no torch, no transformers)."""
    try:
        return json.loads((Path(path) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def family_of(model) -> Family:
    """The family of a loaded model (a peft wrapper too), by its config's model_type."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return family_for_model_type(getattr(base.config, "model_type", None))


def check_supported(family: Family, what: str) -> None:
    if family.unsupported:
        raise HarnessError(f"{what}: {family.description} is not supported: {family.unsupported}")


def named_models() -> dict[str, tuple[Family, NamedModel]]:
    """Every named model of every family: ``--model <name>``."""
    return {m.name: (f, m) for f in families().values() for m in f.models}
