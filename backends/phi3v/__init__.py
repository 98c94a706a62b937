"""Native Phi-3-Vision (no remote code): config, model, processor, loader and a tiny test model."""

from __future__ import annotations

import json
from pathlib import Path

from .configuration import Phi3VConfig
from .modeling import Phi3VForCausalLM
from .processing import Phi3VProcessor, set_generation_tokens
from .tiny import build_tiny_phi3v

__all__ = ["Phi3VConfig", "Phi3VForCausalLM", "Phi3VProcessor", "build_tiny_phi3v", "is_phi3v_dir", "load"]


def is_phi3v_dir(path) -> bool:
    """A local directory whose config.json says model_type "phi3_v" (official or saved by us)."""
    config = Path(path) / "config.json"
    try:
        return json.loads(config.read_text()).get("model_type") == "phi3_v"
    except (OSError, ValueError, AttributeError):
        return False


def load(path, *, device: str = "cpu", num_crops: int | None = None, **from_pretrained):
    """(model, processor) from a phi3_v directory, eval mode, on ``device``, with the family's stop
    tokens set. ``from_pretrained`` takes the one loader's options (dtype, attention, quantisation).
    """
    from_pretrained.setdefault("device_map", {"": device})
    model, info = Phi3VForCausalLM.from_pretrained(path, output_loading_info=True, **from_pretrained)
    bad = {k: sorted(v)[:5] for k, v in info.items() if k in ("missing_keys", "unexpected_keys") and v}
    if bad:
        raise ValueError(f"{path}: checkpoint does not match Phi3VForCausalLM: {bad}")
    set_generation_tokens(model)
    return model.eval(), Phi3VProcessor.from_pretrained(path, num_crops=num_crops)


def _register() -> None:
    """Let AutoConfig / AutoModelForCausalLM resolve "phi3_v" natively (no trust_remote_code)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        AutoConfig.register("phi3_v", Phi3VConfig, exist_ok=True)
        AutoModelForCausalLM.register(Phi3VConfig, Phi3VForCausalLM, exist_ok=True)
    except (ValueError, TypeError):  # a transformers that ships its own phi3_v keeps it
        pass


_register()
