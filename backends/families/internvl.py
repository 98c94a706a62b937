"""InternVL 3 / 3.5 (the ``-hf`` checkpoints: InternViT + pixel shuffle + Qwen2/Qwen3); transformers'
own classes, no remote code."""

from __future__ import annotations

from backends.families import Family, NamedModel, register

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
# The -hf checkpoints' format: ChatML with '<IMG_CONTEXT>\n' per image, which the processor expands
# into '<img>' + '<IMG_CONTEXT>' x (tokens per tile x tiles) + '</img>'.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] }}{{ '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<IMG_CONTEXT>' }}{{ '\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>' }}{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant' }}{{ '\n' }}{% endif %}"
)
IMAGE_SIZE, PATCH = 32, 8  # 4x4 patches, pixel shuffle by 0.5 -> 4 tokens per tile
TOKENS_PER_TILE = (IMAGE_SIZE // PATCH) ** 2 // 4


def _image_budget(processor, cap):
    """Fewer tiles (each image_seq_length tokens, plus a thumbnail), then one tile."""
    images = processor.image_processor
    for tiles in range(images.max_patches - 1, 0, -1):
        images.max_patches = tiles
        yield f"max_patches {tiles}"
    images.crop_to_patches = False
    yield "crop_to_patches off"


def build_tiny(path, corpus):
    from transformers import (
        GotOcr2ImageProcessorPil,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
    )

    from backends.tiny import TEXT, VISION, finish_tiny, seeded, train_tokenizer

    # The processor reads these four named tokens from the tokenizer and has no fallback.
    named = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}  # fmt: skip
    tok = train_tokenizer(corpus, SPECIAL, chat_template=CHAT_TEMPLATE, eos="<|im_end|>", pad="<|endoftext|>", named=named)  # fmt: skip
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL}
    config = InternVLConfig(
        vision_config={**VISION, "image_size": [IMAGE_SIZE, IMAGE_SIZE], "patch_size": [PATCH, PATCH]},
        text_config={**TEXT, "model_type": "qwen2", "vocab_size": len(tok), "pad_token_id": ids["<|endoftext|>"],
                     "eos_token_id": ids["<|im_end|>"], "bos_token_id": None},
        image_token_id=ids["<IMG_CONTEXT>"], image_seq_length=TOKENS_PER_TILE, downsample_ratio=0.5,
        vision_feature_layer=-1, vision_feature_select_strategy="default", tie_word_embeddings=False,
    )  # fmt: skip
    model = seeded(lambda: InternVLForConditionalGeneration(config))
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    # Up to 4 tiles of 32 px (+ a thumbnail when there is more than one).
    images = GotOcr2ImageProcessorPil(size=size, crop_to_patches=True, min_patches=1, max_patches=4)
    processor = InternVLProcessor(images, tok, InternVLVideoProcessor(size=size), image_seq_length=TOKENS_PER_TILE, chat_template=CHAT_TEMPLATE)  # fmt: skip
    return finish_tiny(path, model, processor, eos=[ids["<|im_end|>"], ids["<|endoftext|>"]], pad=ids["<|endoftext|>"])  # fmt: skip


register(
    Family(
        "internvl",
        "InternVL 3 / 3.5 -hf (InternViT + Qwen), transformers' own classes",
        model_types=("internvl",),
        stop_tokens=("<|im_end|>",),
        image_modules=("vision_tower", "multi_modal_projector"),
        lora_projector=(r"multi_modal_projector\.linear_[12]",),
        lora_vision=(r"vision_tower\..*\.(q_proj|k_proj|v_proj|projection_layer|fc1|fc2)",),
        video=True,
        image_budget=_image_budget,
        models=(
            NamedModel(
                "internvl3-1b",
                "InternVL3 1B (-hf)",
                "OpenGVLab/InternVL3-1B-hf",
                "014c0583a0d4bedf29fbe2dbff4f865eb998e171",
            ),
            NamedModel(
                "internvl3-2b",
                "InternVL3 2B (-hf)",
                "OpenGVLab/InternVL3-2B-hf",
                "cb57a075cb75a2e6d1b668b128d48bb00ae321d2",
            ),
            NamedModel(
                "internvl3-8b",
                "InternVL3 8B (-hf)",
                "OpenGVLab/InternVL3-8B-hf",
                "259a3b64a14623c0ec91a045cb43f7c5af5fa6af",
            ),
            NamedModel(
                "internvl3.5-2b",
                "InternVL3.5 2B (-HF)",
                "OpenGVLab/InternVL3_5-2B-HF",
                "3f301ffcf3dcbb47893afae6650ea3e78d96fb6d",
            ),
            NamedModel("tiny-internvl", "tiny random InternVL, built offline; for tests", build=build_tiny),
        ),
    )
)
