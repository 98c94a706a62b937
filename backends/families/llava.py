"""LLaVA (CLIP vision tower + projector + a Llama-like decoder), through transformers' Auto classes."""

from __future__ import annotations

from backends.families import Family, NamedModel, register


def _build_tiny(path, corpus):
    from backends.tiny import build_tiny

    return build_tiny(path, corpus)


register(
    Family(
        "llava",
        "LLaVA 1.5 (CLIP + Llama-like decoder), transformers' own classes",
        model_types=("llava",),
        image_modules=("vision_tower", "multi_modal_projector"),
        lora_projector=(r"multi_modal_projector\.linear_[12]",),
        lora_vision=(r"vision_tower\..*\.(q_proj|k_proj|v_proj|out_proj|fc1|fc2)",),
        models=(
            NamedModel(
                "tiny",
                "tiny random Llava (CLIP + Llama, <1M params), built offline; for tests",
                build=_build_tiny,
            ),
        ),
    )
)
