"""LLaVA-OneVision (0.5B, 7B; Qwen2 decoder, SigLIP tower, any-resolution tiles); transformers' own classes."""

from __future__ import annotations

from backends.families import Family, NamedModel, register

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
# llava-onevision-qwen2-*-ov-hf's format: '<|im_start|>user <image>\ntext<|im_end|><|im_start|>assistant\n'
# (images first, each text part after a newline, nothing after <|im_end|>).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% if message['content'] is string %}{{ '\n' + message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{% for part in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\n' + part['text'] }}{% endfor %}"
    "{% endif %}"
    "{{ '<|im_end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant' }}{{ '\n' }}{% endif %}"
)
IMAGE_SIZE, PATCH = 32, 8  # SigLIP without CLS: 16 tokens per 32 px tile
PINPOINTS = [[32, 32], [32, 64], [64, 32], [64, 64]]  # any-resolution grid: up to 2x2 tiles + the base image


def build_tiny(path, corpus):
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    from backends.tiny import TEXT, VISION, finish_tiny, seeded, train_tokenizer

    named = {"image_token": "<image>", "video_token": "<video>"}
    tok = train_tokenizer(corpus, SPECIAL, chat_template=CHAT_TEMPLATE, eos="<|im_end|>", pad="<|endoftext|>", named=named)  # fmt: skip
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL}
    config = LlavaOnevisionConfig(
        vision_config={**VISION, "model_type": "siglip_vision_model", "image_size": IMAGE_SIZE, "patch_size": PATCH,
                       "vision_use_head": False},
        text_config={**TEXT, "model_type": "qwen2", "vocab_size": len(tok), "pad_token_id": ids["<|endoftext|>"],
                     "eos_token_id": ids["<|im_end|>"], "bos_token_id": None},
        image_token_index=ids["<image>"], video_token_index=ids["<video>"], vision_feature_select_strategy="full",
        vision_feature_layer=-1, image_grid_pinpoints=PINPOINTS, vision_aspect_ratio="anyres_max_9",
        tie_word_embeddings=False,
    )  # fmt: skip
    model = seeded(lambda: LlavaOnevisionForConditionalGeneration(config))
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    processor = LlavaOnevisionProcessor(
        LlavaOnevisionImageProcessorPil(size=size, image_grid_pinpoints=PINPOINTS), tok,
        LlavaOnevisionVideoProcessor(size=size), num_image_tokens=(IMAGE_SIZE // PATCH) ** 2,
        vision_feature_select_strategy="full", chat_template=CHAT_TEMPLATE, image_token="<image>",
        video_token="<video>", vision_aspect_ratio="anyres_max_9",
    )  # fmt: skip
    return finish_tiny(path, model, processor, eos=[ids["<|im_end|>"], ids["<|endoftext|>"]], pad=ids["<|endoftext|>"])  # fmt: skip


register(
    Family(
        "llava_onevision",
        "LLaVA-OneVision (SigLIP + Qwen2, any-resolution), transformers' own classes",
        model_types=("llava_onevision",),
        stop_tokens=("<|im_end|>",),
        image_modules=("vision_tower", "multi_modal_projector"),
        lora_projector=(r"multi_modal_projector\.linear_[12]",),
        lora_vision=(r"vision_tower\..*\.(q_proj|k_proj|v_proj|out_proj|fc1|fc2)",),
        video=True,
        models=(
            NamedModel(
                "llava-onevision-0.5b",
                "LLaVA-OneVision Qwen2 0.5B",
                "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
                "74dd0bf867a4cda7950c17663794267c60cf4b40",
            ),  # fmt: skip
            NamedModel(
                "llava-onevision-7b",
                "LLaVA-OneVision Qwen2 7B",
                "llava-hf/llava-onevision-qwen2-7b-ov-hf",
                "0d50680527681998e456c7b78950205bedd8a068",
            ),  # fmt: skip
            NamedModel(
                "tiny-llava-onevision",
                "tiny random LLaVA-OneVision, built offline; for tests",
                build=build_tiny,
            ),  # fmt: skip
        ),
    )
)
