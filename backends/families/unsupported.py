"""Architectures the harness recognises but cannot evaluate: it says why in one line instead of
failing deep inside generation or scoring a model on a prompt it was never made for."""

from __future__ import annotations

from backends.families import Family, register

register(
    Family(
        "florence2",
        "Florence-2",
        model_types=("florence2",),
        unsupported="an encoder-decoder model prompted with task tokens (<CAPTION>, <OD>), not a chat model "
        "that answers a question in text",
    )
)
register(
    Family(
        "paligemma",
        "PaliGemma",
        model_types=("paligemma",),
        unsupported="a prefix-LM prompted with task prefixes ('caption en'), with no chat template to ask "
        "the task's question; fine-tune it on the task first and serve it, or use a chat model",
    )
)
