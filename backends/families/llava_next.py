"""LLaVA-NeXT (v1.6, Mistral 7B: CLIP tower, any-resolution tiles); transformers' own classes."""

from __future__ import annotations

from backends.families import Family, NamedModel, register

SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
# llava-v1.6-mistral-7b-hf's format: '<s>[INST] <image>\ntext [/INST] answer</s>'; the tokenizer, not the
# template, writes <s>; the prompt to answer ends with ' [/INST]'.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{ '<<SYS>>' }}{{ '\n' }}{{ message['content'][0]['text'] if message['content'] is not string else message['content'] }}"
    "{{ '\n' }}{{ '<</SYS>>' }}{{ '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{{ '\n' }}{% endfor %}"
    "{% for part in message['content'] | selectattr('type', 'equalto', 'text') %}{{ part['text'] }}{% endfor %}"
    "{% endif %}{{ ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + (message['content'] if message['content'] is string else message['content'][0]['text']) + '</s> ' }}"
    "{% endif %}"
    "{% endfor %}"
)
IMAGE_SIZE, PATCH = 32, 8  # CLIP: 16 patches + CLS, which the "default" strategy drops
PINPOINTS = [[32, 64], [64, 32], [64, 64]]


def build_tiny(path, corpus):
    from transformers import (  # fmt: skip
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
    )

    from backends.tiny import TEXT, VISION, finish_tiny, seeded, train_tokenizer

    tok = train_tokenizer(corpus, SPECIAL, chat_template=CHAT_TEMPLATE, eos="</s>", pad="<pad>", bos="<s>", add_bos=True, named={"image_token": "<image>"})  # fmt: skip
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL}
    config = LlavaNextConfig(
        vision_config={**VISION, "model_type": "clip_vision_model", "image_size": IMAGE_SIZE, "patch_size": PATCH,
                       "projection_dim": 64},
        text_config={**TEXT, "model_type": "mistral", "vocab_size": len(tok), "sliding_window": None,
                     "pad_token_id": ids["<pad>"], "eos_token_id": ids["</s>"], "bos_token_id": ids["<s>"]},
        image_token_index=ids["<image>"], vision_feature_select_strategy="default", vision_feature_layer=-2,
        image_grid_pinpoints=PINPOINTS, tie_word_embeddings=False,
    )  # fmt: skip
    model = seeded(lambda: LlavaNextForConditionalGeneration(config))
    images = LlavaNextImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_grid_pinpoints=PINPOINTS
    )  # fmt: skip
    processor = LlavaNextProcessor(
        images, tok, patch_size=PATCH, vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
        image_token="<image>", num_additional_image_tokens=1,
    )  # fmt: skip
    return finish_tiny(path, model, processor, eos=[ids["</s>"]], pad=ids["<pad>"], bos=ids["<s>"])


register(
    Family(
        "llava_next",
        "LLaVA-NeXT (CLIP + Mistral, any-resolution), transformers' own classes",
        model_types=("llava_next",),
        stop_tokens=("</s>",),
        image_modules=("vision_tower", "multi_modal_projector"),
        lora_projector=(r"multi_modal_projector\.linear_[12]",),
        lora_vision=(r"vision_tower\..*\.(q_proj|k_proj|v_proj|out_proj|fc1|fc2)",),
        models=(
            NamedModel(
                "llava-next-mistral-7b",
                "LLaVA-NeXT (v1.6) Mistral 7B",
                "llava-hf/llava-v1.6-mistral-7b-hf",
                "2424fdd47412fccc66d91719126b420e9fbd7065",
            ),  # fmt: skip
            NamedModel(
                "tiny-llava-next", "tiny random LLaVA-NeXT, built offline; for tests", build=build_tiny
            ),
        ),
    )
)
