"""Qwen3-VL (2B, 4B, 8B): transformers' own classes; interleaved M-RoPE, DeepStack visual features."""

from __future__ import annotations

from backends.families import Family, NamedModel, register
from backends.families.qwen2_5_vl import PIXELS, QWEN_NAMED, QWEN_SPECIAL, image_budget

# The model card's format: ChatML like Qwen2.5-VL, without a default system message.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
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


def build_tiny(path, corpus):
    from transformers import (
        Qwen2VLImageProcessorPil,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    from backends.tiny import TEXT, finish_tiny, seeded, train_tokenizer

    tok = train_tokenizer(corpus, QWEN_SPECIAL, chat_template=CHAT_TEMPLATE, eos="<|im_end|>", pad="<|endoftext|>", named=QWEN_NAMED)  # fmt: skip
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    config = Qwen3VLConfig(
        # num_position_embeddings: a perfect square (the position table is interpolated);
        # each DeepStack index needs a text layer to add into.
        vision_config={"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4, "out_hidden_size": 128,
                       "patch_size": 8, "spatial_merge_size": 2, "temporal_patch_size": 2,
                       "num_position_embeddings": 64, "deepstack_visual_indexes": [0]},
        text_config={**TEXT, "vocab_size": len(tok), "head_dim": 32, "pad_token_id": ids["<|endoftext|>"],
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [6, 5, 5],
                                         "mrope_interleaved": True}},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )  # fmt: skip
    model = seeded(lambda: Qwen3VLForConditionalGeneration(config))
    processor = Qwen3VLProcessor(
        Qwen2VLImageProcessorPil(**PIXELS), tok, Qwen3VLVideoProcessor(**PIXELS), chat_template=CHAT_TEMPLATE
    )
    return finish_tiny(path, model, processor, eos=[ids["<|im_end|>"], ids["<|endoftext|>"]], pad=ids["<|endoftext|>"])  # fmt: skip


register(
    Family(
        "qwen3_vl",
        "Qwen3-VL (ChatML, interleaved M-RoPE, DeepStack), transformers' own classes",
        model_types=("qwen3_vl",),
        stop_tokens=("<|im_end|>", "<|endoftext|>"),
        image_modules=("visual",),  # the vision tower, its merger and the DeepStack mergers
        lora_projector=(r"visual\.(merger|deepstack_merger_list\.\d+)\.linear_fc[12]",),
        lora_vision=(r"visual\.blocks\..*\.(qkv|proj|linear_fc1|linear_fc2)",),
        video=True,
        image_budget=image_budget,
        models=(
            NamedModel(
                "qwen3-vl-2b",
                "Qwen3-VL 2B Instruct",
                "Qwen/Qwen3-VL-2B-Instruct",
                "89644892e4d85e24eaac8bacfd4f463576704203",
            ),
            NamedModel(
                "qwen3-vl-4b",
                "Qwen3-VL 4B Instruct",
                "Qwen/Qwen3-VL-4B-Instruct",
                "ebb281ec70b05090aa6165b016eac8ec08e71b17",
            ),
            NamedModel(
                "qwen3-vl-8b",
                "Qwen3-VL 8B Instruct",
                "Qwen/Qwen3-VL-8B-Instruct",
                "0c351dd01ed87e9c1b53cbc748cba10e6187ff3b",
            ),
            NamedModel("tiny-qwen3-vl", "tiny random Qwen3-VL, built offline; for tests", build=build_tiny),
        ),
    )
)
