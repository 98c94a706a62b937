"""`harness train --dry-run`: the training plan and the memory each GPU needs, before any GPU is rented.

Parameter counts are exact: the model is built on the meta device from its config (no weights are
read), and the LoRA targets are the recipe's own. Memory is an estimate per GPU, by strategy:

- weights in bf16 (2 bytes; NF4 with --qlora: ~0.56 bytes for the text linears): whole on every
  GPU under DDP and ZeRO-2, sharded over the GPUs under FSDP and ZeRO-3;
- the trainable (LoRA) weights kept in fp32 with their gradients and AdamW's two moments (16 bytes
  a parameter): whole under DDP, gradients and moments sharded under ZeRO-2, all sharded under
  FSDP and ZeRO-3;
- activations with gradient checkpointing (bf16): one hidden state per decoder layer and one
  layer's intermediates recomputed at a time, for every token of the longest sample (an image at
  ``num_crops`` is (crops + 1) x 144 + 1 + (rows + 1) x 12 tokens), plus the fp32 logits and their
  gradient over the vocabulary.

It is an estimate, not a measurement (the allocator, CUDA context and kernels' workspaces add a
few GB): BENCHMARKS.md records measured peaks.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from backends.families import family_of, get_family
from harness.core.errors import HarnessError
from harness.core.schema import ModelInfo

if TYPE_CHECKING:
    from harness.options import TrainOptions

STRATEGIES = ("ddp", "fsdp", "zero2", "zero3")
OFFICIAL_CONFIGS = {  # the published configs, shipped with the package for offline plans
    "microsoft/Phi-3-vision-128k-instruct": "official-config.json",
    "microsoft/Phi-3.5-vision-instruct": "official-config.json",
}
GB = 1024**3


@dataclass
class Plan:
    total: int  # parameters
    vision: int
    trainable: int
    tokens: int  # of the longest sample
    layers: int
    hidden: int
    intermediate: int
    vocab: int

    def memory(self, strategy: str, gpus: int, batch: int, qlora: bool = False) -> dict[str, float]:
        """GB per GPU: weights, trainable states, activations, total."""
        if strategy not in STRATEGIES:
            raise HarnessError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
        text_linear = self.layers * (4 * self.hidden * self.hidden + 3 * self.hidden * self.intermediate)
        weights = 2 * self.total if not qlora else 2 * (self.total - text_linear) + 0.56 * text_linear
        if strategy in ("fsdp", "zero3"):
            weights /= gpus
        states = {"ddp": 16, "zero2": 4 + 12 / gpus, "fsdp": 16 / gpus, "zero3": 16 / gpus}[strategy]
        tokens = batch * self.tokens
        hidden_states = tokens * self.hidden * 2 * self.layers
        one_layer = tokens * (6 * self.hidden + 3 * self.intermediate) * 2
        logits = tokens * self.vocab * 4 * 2
        out = {
            "weights": weights / GB,
            "trainable states": states * self.trainable / GB,
            "activations": (hidden_states + one_layer + logits) / GB,
        }
        out["total"] = sum(out.values())
        return out


def image_tokens(num_crops: int, side_tokens: int = 12) -> int:
    """Tokens of the largest image at ``num_crops`` (a square-ish grid h x w <= num_crops)."""
    h = w = int(math.isqrt(num_crops))
    return (h * w + 1) * side_tokens**2 + 1 + (h + 1) * side_tokens


def config_dict(info: ModelInfo) -> dict:
    """The model's config.json: a local directory's, the Hugging Face cache's, or the packaged official one."""
    if Path(info.path).is_dir():
        return json.loads((Path(info.path) / "config.json").read_text())
    if info.path in OFFICIAL_CONFIGS:
        from backends import phi3v

        return json.loads((Path(phi3v.__file__).parent / "assets" / OFFICIAL_CONFIGS[info.path]).read_text())
    from huggingface_hub import hf_hub_download

    try:
        return json.loads(Path(hf_hub_download(info.path, "config.json", revision=info.revision)).read_text())
    except Exception as err:  # noqa: BLE001 - offline and not cached: one line
        raise HarnessError(f"--dry-run: no config.json for {info.path!r} (offline and not cached)") from err


def plan(info: ModelInfo, *, lora_r: int, projector: bool, vision: bool) -> Plan:
    """Exact parameter counts of ``info``'s architecture (built on the meta device) and LoRA targets."""
    import torch

    from backends.trl.recipe import lora_target_regex

    raw = config_dict(info)
    if raw.get("model_type") == "phi3_v":
        from backends.phi3v import Phi3VConfig, Phi3VForCausalLM

        config = Phi3VConfig(**{k: v for k, v in raw.items() if k not in ("architectures", "auto_map")})
        with torch.device("meta"):
            model = Phi3VForCausalLM(config)
        crops = info.num_crops or 16
        tokens = image_tokens(crops, config.tokens_per_side) + 48
    else:
        from transformers import AutoConfig, AutoModelForImageTextToText

        config = AutoConfig.for_model(**raw)
        with torch.device("meta"):
            model = AutoModelForImageTextToText.from_config(config)
        tokens = int(getattr(config, "image_seq_length", 576)) + 48
    text = getattr(config, "text_config", config)
    pattern = re.compile(lora_target_regex(model, projector=projector, vision=vision))
    trainable = sum(
        lora_r * (m.in_features + m.out_features)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and pattern.fullmatch(name)
    )
    image_path = get_family(info.family).image_modules or family_of(model).image_modules
    vision_params = sum(p.numel() for n, p in model.named_parameters() if set(n.split(".")) & set(image_path))
    return Plan(
        total=sum(p.numel() for p in model.parameters()),
        vision=vision_params,
        trainable=trainable,
        tokens=tokens,
        layers=text.num_hidden_layers,
        hidden=text.hidden_size,
        intermediate=text.intermediate_size,
        vocab=text.vocab_size,
    )


def print_plan(info: ModelInfo, params, processes: int, strategy: str | None, qlora: bool) -> Plan:
    """The plan as `harness train --dry-run` prints it: counts, then GB per GPU by strategy."""
    import typer

    result = plan(info, lora_r=params.lora_r, projector=params.lora_projector, vision=params.lora_vision)
    batch = params.batch_size
    typer.echo(f"model {info.name} ({info.path}): {result.total / 1e9:.2f}B parameters, {result.vision / 1e6:.0f}M in the vision path")  # fmt: skip
    typer.echo(f"LoRA r={params.lora_r}: {result.trainable / 1e6:.1f}M trainable parameters; longest sample ~{result.tokens} tokens")  # fmt: skip
    typer.echo(f"{processes} GPU(s), per-device batch {batch}, grad accumulation {params.grad_accum}, bf16 {params.bf16}, gradient checkpointing {params.gradient_checkpointing}")  # fmt: skip
    typer.echo(f"{'strategy':<8} {'weights':>8} {'states':>8} {'activ.':>8} {'total GB/GPU':>13}  launch")
    launch = Path(__file__).resolve().parents[1] / "backends" / "trl" / "launch"
    files = {
        "ddp": "ddp.yaml",
        "fsdp": "fsdp.yaml",
        "zero2": "deepspeed_zero2.yaml",
        "zero3": "deepspeed_zero3.yaml",
    }
    for name in [strategy] if strategy else STRATEGIES:
        m = result.memory(name, processes, batch, qlora)
        typer.echo(
            f"{name:<8} {m['weights']:>8.1f} {m['trainable states']:>8.2f} {m['activations']:>8.1f} "
            f"{m['total']:>13.1f}  accelerate launch --config_file {launch / files[name]} -m harness.cli train ..."
        )
    return result


def dry_run(model: str, options: TrainOptions, *, processes: int = 1, strategy: str | None = None):
    """Print the training plan for GPUs (harness.plan) without loading any weight; returns the Plan."""
    from backends.trl.recipe import TrainParams, read_recipe
    from harness.models import resolve

    info = resolve(model, build=False)
    params = TrainParams()  # the GPU recipe: bf16 and gradient checkpointing on
    recipe = {
        **get_family(info.family).recipe,
        **(read_recipe(info.path) if Path(info.path).is_dir() else {}),
    }
    chosen = {"lora_r": options.lora_r, "batch_size": options.batch_size, "grad_accum": options.grad_accum}
    for key, value in {**recipe, **chosen}.items():
        if value is not None and key != "modules_to_save":
            setattr(params, key, value)
    return print_plan(info, params, processes, strategy, options.qlora)
