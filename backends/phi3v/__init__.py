"""Native Phi-3-Vision (no remote code): config, model, processor, loader and a tiny test model.

The heavy parts (torch, transformers) load on first use of a name, so that looking at a directory
or a built tiny model (a finished re-run) costs no torch import.
"""

from __future__ import annotations

from importlib import import_module

__all__ = ["Phi3VConfig", "Phi3VForCausalLM", "Phi3VProcessor", "build_tiny_phi3v", "load"]
_LAZY = {
    "Phi3VConfig": ".configuration",
    "Phi3VForCausalLM": ".modeling",
    "Phi3VProcessor": ".processing",
    "set_generation_tokens": ".processing",
    "build_tiny_phi3v": ".tiny",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load(path, *, device: str = "cpu", num_crops: int | None = None, **from_pretrained):
    """(model, processor) from a phi3_v directory, eval mode, on ``device``, with the family's stop
    tokens set. ``from_pretrained`` takes the one loader's options (dtype, attention, quantisation).
    """
    from .modeling import Phi3VForCausalLM
    from .processing import Phi3VProcessor, set_generation_tokens

    from_pretrained.setdefault("device_map", {"": device})
    from_pretrained.setdefault("use_kernels", False)  # no hub kernels: see backends.hf's loader
    model, info = Phi3VForCausalLM.from_pretrained(path, output_loading_info=True, **from_pretrained)
    bad = {k: sorted(v)[:5] for k, v in info.items() if k in ("missing_keys", "unexpected_keys") and v}
    if bad:
        raise ValueError(f"{path}: checkpoint does not match Phi3VForCausalLM: {bad}")
    set_generation_tokens(model)
    return model.eval(), Phi3VProcessor.from_pretrained(path, num_crops=num_crops)
