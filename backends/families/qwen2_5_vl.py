"""Qwen2.5-VL (3B, 7B): transformers' own classes; M-RoPE positions over image patches."""

from __future__ import annotations

from backends.families import Family, NamedModel, register

QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]  # fmt: skip
QWEN_NAMED = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
              "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"}  # fmt: skip
# The model card's format (ChatML; an image is <|vision_start|><|image_pad|><|vision_end|>), with the
# default system message Qwen2.5-VL's own template adds when none is given.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system' }}{{ '\n' }}{{ 'You are a helpful assistant.<|im_end|>' }}{{ '\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] }}{{ '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>' }}{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant' }}{{ '\n' }}{% endif %}"
)
# Toy patches of 8 px merged 2x2: one image token per 16x16 px; at most 64x64 px (16 tokens).
PIXELS = {"patch_size": 8, "merge_size": 2, "temporal_patch_size": 2, "size": {"shortest_edge": 16 * 16, "longest_edge": 64 * 64}}  # fmt: skip


def image_budget(processor, cap):
    """Qwen resizes an image to at most ``max_pixels``, one token per (patch x merge)^2 pixels: the
    cap is exact in one step (its published max_pixels lets a photo become thousands of tokens)."""
    images = processor.image_processor
    unit = images.patch_size * images.merge_size
    max_pixels = cap * unit * unit
    shortest = images.size["shortest_edge"] or unit * unit  # a SizeDict or a dict: both index by name
    images.size = {"shortest_edge": min(shortest, max_pixels), "longest_edge": max_pixels}
    if hasattr(images, "max_pixels"):
        images.max_pixels = max_pixels
    yield f"max_pixels {max_pixels}"


def build_tiny(path, corpus):
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessorPil,
        Qwen2VLVideoProcessor,
    )

    from backends.tiny import TEXT, finish_tiny, seeded, train_tokenizer

    tok = train_tokenizer(corpus, QWEN_SPECIAL, chat_template=CHAT_TEMPLATE, eos="<|im_end|>", pad="<|endoftext|>", named=QWEN_NAMED)  # fmt: skip
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    config = Qwen2_5_VLConfig(
        vision_config={"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4, "out_hidden_size": 128,
                       "patch_size": 8, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 32,
                       "fullatt_block_indexes": [1]},
        text_config={**TEXT, "vocab_size": len(tok), "bos_token_id": None, "eos_token_id": ids["<|im_end|>"],
                     "pad_token_id": ids["<|endoftext|>"],
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]}},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )  # fmt: skip
    model = seeded(lambda: Qwen2_5_VLForConditionalGeneration(config))
    processor = Qwen2_5_VLProcessor(
        Qwen2VLImageProcessorPil(**PIXELS), tok, Qwen2VLVideoProcessor(**PIXELS), chat_template=CHAT_TEMPLATE
    )
    return finish_tiny(path, model, processor, eos=[ids["<|im_end|>"], ids["<|endoftext|>"]], pad=ids["<|endoftext|>"])  # fmt: skip


register(
    Family(
        "qwen2_5_vl",
        "Qwen2.5-VL (ChatML, M-RoPE), transformers' own classes",
        model_types=("qwen2_5_vl",),
        stop_tokens=("<|im_end|>", "<|endoftext|>"),
        image_modules=("visual",),  # the vision tower and its merger (the projector)
        lora_projector=(r"visual\.merger\.mlp\.[02]",),
        lora_vision=(r"visual\.blocks\..*\.(qkv|proj|gate_proj|up_proj|down_proj)",),
        video=True,
        image_budget=image_budget,
        models=(
            NamedModel(
                "qwen2.5-vl-3b",
                "Qwen2.5-VL 3B Instruct",
                "Qwen/Qwen2.5-VL-3B-Instruct",
                "66285546d2b821cf421d4f5eb2576359d3770cd3",
            ),
            NamedModel(
                "qwen2.5-vl-7b",
                "Qwen2.5-VL 7B Instruct",
                "Qwen/Qwen2.5-VL-7B-Instruct",
                "cc594898137f460bfe9f0759e9844b3ce807cfb5",
            ),
            NamedModel(
                "tiny-qwen2.5-vl", "tiny random Qwen2.5-VL, built offline; for tests", build=build_tiny
            ),
        ),
    )
)
