"""Gemma 3 (4B instruct): SigLIP tower, average-pooled soft image tokens, bidirectional attention
over each image; transformers' own classes."""

from __future__ import annotations

from backends.families import Family, NamedModel, register

SPECIAL = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>"]  # fmt: skip
# The model card's format: <bos>, turns of user / model, a system message folded into the first user
# turn; an image is <start_of_image>, which the processor expands into the soft image tokens.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% set first_user_prefix = messages[0]['content'][0]['text'] if messages[0]['content'] is not string"
    " else messages[0]['content'] %}{% set first_user_prefix = first_user_prefix + '\n\n' %}"
    "{% set loop_messages = messages[1:] %}"
    "{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role }}{{ '\n' }}{{ first_user_prefix if loop.first else '' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<end_of_turn>' }}{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model' }}{{ '\n' }}{% endif %}"
)
IMAGE_SIZE, PATCH, SOFT_TOKENS = 32, 8, 4  # 4x4 patches average-pooled to 2x2 soft tokens per image


def _with_random_projector(model):
    """transformers initialises the projector's weight to zeros (a checkpoint overwrites it): a random
    tiny model would never see its images."""
    import torch

    with torch.no_grad():
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(std=0.1)
    return model


def build_tiny(path, corpus):
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessorPil,
        Gemma3Processor,
    )

    from backends.tiny import TEXT, VISION, finish_tiny, seeded, train_tokenizer

    named = {
        "boi_token": "<start_of_image>",
        "eoi_token": "<end_of_image>",
        "image_token": "<image_soft_token>",
    }
    # The template writes <bos>: the tokenizer must not add a second one.
    tok = train_tokenizer(corpus, SPECIAL, chat_template=CHAT_TEMPLATE, eos="<eos>", pad="<pad>", bos="<bos>", named=named)  # fmt: skip
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL}
    config = Gemma3Config(
        vision_config={**VISION, "model_type": "siglip_vision_model", "image_size": IMAGE_SIZE, "patch_size": PATCH,
                       "vision_use_head": False},
        text_config={**TEXT, "vocab_size": len(tok), "head_dim": 32, "query_pre_attn_scalar": 32, "sliding_window": 16,
                     "layer_types": ["sliding_attention", "full_attention"], "pad_token_id": ids["<pad>"],
                     "eos_token_id": ids["<eos>"], "bos_token_id": ids["<bos>"]},
        mm_tokens_per_image=SOFT_TOKENS, boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"], image_token_index=ids["<image_soft_token>"],
        tie_word_embeddings=False,
    )  # fmt: skip
    model = seeded(lambda: _with_random_projector(Gemma3ForConditionalGeneration(config)))
    images = Gemma3ImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_pan_and_scan=False)
    processor = Gemma3Processor(images, tok, chat_template=CHAT_TEMPLATE, image_seq_length=SOFT_TOKENS)
    return finish_tiny(path, model, processor, eos=[ids["<eos>"], ids["<end_of_turn>"]], pad=ids["<pad>"], bos=ids["<bos>"])  # fmt: skip


register(
    Family(
        "gemma3",
        "Gemma 3 (SigLIP + Gemma, soft image tokens), transformers' own classes",
        model_types=("gemma3",),
        stop_tokens=("<end_of_turn>", "<eos>"),
        # The projector holds a plain weight (no Linear): LoRA cannot reach it; 4-bit leaves it alone.
        image_modules=("vision_tower", "multi_modal_projector"),
        lora_vision=(r"vision_tower\..*\.(q_proj|k_proj|v_proj|out_proj|fc1|fc2)",),
        models=(
            NamedModel(
                "gemma-3-4b",
                "Gemma 3 4B instruct",
                "google/gemma-3-4b-it",
                "093f9f388b31de276ce2de164bdc2081324b9767",
            ),
            NamedModel("tiny-gemma3", "tiny random Gemma 3, built offline; for tests", build=build_tiny),
        ),
    )
)
