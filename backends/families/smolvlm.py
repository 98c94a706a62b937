"""SmolVLM (256M, 500M instruct): the Idefics3 architecture (SigLIP tiles + pixel shuffle + a Llama
decoder); transformers' own classes. Its processor has no video half: no torchvision needed."""

from __future__ import annotations

from backends.families import Family, NamedModel, register

ROW_COL = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>", "<global-img>", *ROW_COL]  # fmt: skip
# The model card's format: '<|im_start|>User:<image>text<end_of_utterance>\nAssistant: answer...'
# (the role capitalised; ':' before an image, ': ' before text).
CHAT_TEMPLATE = (
    "{{ '<|im_start|>' }}"
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}"
    "{% else %}{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<end_of_utterance>' }}{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
TILE, PATCH, SCALE = 32, 8, 2  # (32 / 8)^2 / 2^2 = 4 tokens per 32 px tile


def _image_budget(processor, cap):
    """A smaller grid of tiles (longest edge a multiple of the tile), then no splitting at all."""
    images = processor.image_processor
    tile = images.max_image_size["longest_edge"]
    for multiple in range(images.size["longest_edge"] // tile - 1, 0, -1):
        images.size = {"longest_edge": multiple * tile}
        yield f"longest_edge {multiple * tile}"
    images.do_image_splitting = False
    yield "do_image_splitting off"


def build_tiny(path, corpus):
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    from backends.tiny import TEXT, VISION, finish_tiny, seeded, train_tokenizer

    named = {"fake_image_token": "<fake_token_around_image>", "image_token": "<image>",
             "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>"}  # fmt: skip
    tok = train_tokenizer(corpus, SPECIAL, chat_template=CHAT_TEMPLATE, eos="<end_of_utterance>", pad="<|endoftext|>", named=named)  # fmt: skip
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL}
    config = Idefics3Config(
        vision_config={**VISION, "image_size": TILE, "patch_size": PATCH},
        text_config={**TEXT, "model_type": "llama", "vocab_size": len(tok), "pad_token_id": ids["<|endoftext|>"],
                     "eos_token_id": ids["<end_of_utterance>"], "bos_token_id": None},
        image_token_id=ids["<image>"], scale_factor=SCALE, tie_word_embeddings=False,
    )  # fmt: skip
    model = seeded(lambda: Idefics3ForConditionalGeneration(config))
    # An image becomes up to 2x2 tiles of 32 px and a global 32 px view.
    images = Idefics3ImageProcessorPil(do_image_splitting=True, size={"longest_edge": 2 * TILE}, max_image_size={"longest_edge": TILE})  # fmt: skip
    processor = Idefics3Processor(images, tok, image_seq_len=(TILE // PATCH) ** 2 // SCALE**2, chat_template=CHAT_TEMPLATE)  # fmt: skip
    return finish_tiny(path, model, processor, eos=[ids["<end_of_utterance>"]], pad=ids["<|endoftext|>"])


register(
    Family(
        "smolvlm",
        "SmolVLM (Idefics3: SigLIP tiles + Llama), transformers' own classes",
        model_types=("idefics3", "smolvlm"),
        image_budget=_image_budget,
        stop_tokens=("<end_of_utterance>",),
        image_modules=("vision_model", "connector"),
        lora_projector=(r"connector\.modality_projection\.proj",),
        lora_vision=(r"vision_model\..*\.(q_proj|k_proj|v_proj|out_proj|fc1|fc2)",),
        models=(
            NamedModel(
                "smolvlm-256m",
                "SmolVLM 256M Instruct (Idefics3)",
                "HuggingFaceTB/SmolVLM-256M-Instruct",
                "7e3e67edbbed1bf9888184d9df282b700a323964",
            ),  # fmt: skip
            NamedModel(
                "smolvlm-500m",
                "SmolVLM 500M Instruct (Idefics3)",
                "HuggingFaceTB/SmolVLM-500M-Instruct",
                "a7da5b986cb59b408707209984f360a5f4ad7e47",
            ),  # fmt: skip
            NamedModel(
                "tiny-smolvlm", "tiny random SmolVLM (Idefics3), built offline; for tests", build=build_tiny
            ),
        ),
    )
)
