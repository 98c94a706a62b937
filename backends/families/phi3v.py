"""Phi-3-Vision and Phi-3.5-Vision: a native implementation (backends/phi3v), no remote code."""

from __future__ import annotations

from backends.families import Family, NamedModel, register


def _load(directory, *, num_crops=None, **from_pretrained):
    from backends import phi3v

    return phi3v.load(directory, num_crops=num_crops, **from_pretrained)


def _load_processor(directory, *, num_crops=None):
    from backends.phi3v import Phi3VProcessor

    return Phi3VProcessor.from_pretrained(directory, num_crops=num_crops)


def _image_budget(processor, cap):
    """Fewer crops, one at a time: an image is (crops + 1) x 144 tokens and its separators."""
    for crops in range(processor.num_crops - 1, 0, -1):
        processor.num_crops = crops
        yield f"num_crops {crops}"


def _build_tiny(path, corpus):
    from backends.phi3v.tiny import build_tiny_phi3v

    return build_tiny_phi3v(path)  # the real Phi-3 tokenizer: no corpus needed


register(
    Family(
        "phi3v",
        "Phi-3-Vision / Phi-3.5-Vision (native, no remote code)",
        model_types=("phi3_v",),
        load=_load,
        load_processor=_load_processor,
        image_budget=_image_budget,
        # Stop tokens: its loader writes <|end|> and <|endoftext|> into the generation config.
        lora_text=("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
        image_modules=("vision_embed_tokens",),  # the CLIP tower and the img_projection MLP
        lora_projector=(r"img_projection\.[02]",),
        lora_vision=(r"img_processor\..*\.(q_proj|k_proj|v_proj|out_proj|fc1|fc2)",),
        models=(
            NamedModel(
                "phi-3-vision",
                "Phi-3-Vision 128k instruct (4.2B), native backend, 16 crops",
                "microsoft/Phi-3-vision-128k-instruct",
                "ed2772fabe9dc9acd0caad54b62761d92520cc44",
                num_crops=16,
            ),
            NamedModel(
                "phi-3.5-vision",
                "Phi-3.5-Vision instruct (4.2B), native backend, 4 crops",
                "microsoft/Phi-3.5-vision-instruct",
                "12b77fb40b63a2c73c68243d3f767aab688a1b2a",
                num_crops=4,
            ),
            NamedModel("tiny-phi3v", "tiny random Phi-3-Vision, built offline; for tests", build=_build_tiny),
        ),
    )
)
