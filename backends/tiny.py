"""A deterministic tiny vision-language model, built offline for tests and benchmarks.

It is a native transformers architecture (Llava: CLIP vision tower + Llama text model) with a
byte-level BPE tokenizer trained on a given corpus and a Phi-3 style chat template, saved with
``save_pretrained`` so that it loads through exactly the same code path as any real model.
Random weights: its answers are nonsense until trained, but every code path is real.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from backends.base import RECIPE_FILE

MARKER = "harness-tiny.done"  # written last: a directory without it is a half-built one
IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ["<pad>", "<|endoftext|>", "<|end|>", IMAGE_TOKEN, "<|user|>", "<|assistant|>", "<|system|>"]

# Phi-3 format. Jinja strips the newline after a block tag, hence the explicit {{ '\n' }}.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' }}{{ '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|end|>' }}{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{{ '\n' }}{% endif %}"
)

# How a tiny random model is fine-tuned (written into its directory as harness-recipe.json): fp32,
# a high lr and trainable embeddings/head, LoRA on the projector and vision linears too -- without
# these, LoRA on random weights barely learns, and the random frozen tower hides the image.
TINY_RECIPE = {
    "epochs": 6, "lr": 3e-3, "batch_size": 8, "grad_accum": 1, "lora_r": 16, "lora_alpha": 32,
    "lora_dropout": 0.0, "warmup_steps": 5, "bf16": False, "gradient_checkpointing": False,
    "modules_to_save": "embeddings", "lora_projector": True, "lora_vision": True, "save_steps": 50,
    "logging_steps": 5, "eval_every": 50, "n_eval": 16,
}  # fmt: skip

# Sized so that generation is realistic (batching pays off) yet a test run takes seconds.
IMAGE_SIZE = 32
PATCH_SIZE = 8
VOCAB_SIZE = 1000
SEED = 0


def write_recipe(model_dir: Path) -> None:
    (Path(model_dir) / RECIPE_FILE).write_text(json.dumps(TINY_RECIPE, indent=1) + "\n")


def is_built(path: Path) -> bool:
    return (Path(path) / MARKER).is_file()


def _tokenizer(corpus: Iterable[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Sorted, de-duplicated lines: the same corpus in any order trains the same tokenizer.
    tok.train_from_iterator(sorted(set(corpus)), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<|end|>",
        unk_token=None,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
    )


def build_tiny(path: Path, corpus: Iterable[str]) -> Path:
    """Build (or reuse) the tiny Llava model in ``path``; the same corpus gives the same bytes."""
    path = Path(path)
    if is_built(path):  # before importing torch: a finished re-run must stay cheap
        return path
    import torch
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = _tokenizer(corpus)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    n_patches = (IMAGE_SIZE // PATCH_SIZE) ** 2
    vision = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=64,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=ids["<pad>"],
        eos_token_id=ids["<|end|>"],
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=ids[IMAGE_TOKEN],
        image_seq_length=n_patches,
        vision_feature_select_strategy="default",  # drop CLS: one token per patch
        vision_feature_layer=-1,
    )
    torch.manual_seed(SEED)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["<|end|>"]
    model.generation_config.pad_token_id = ids["<pad>"]
    model.generation_config.bos_token_id = None

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
    )
    # Built beside the target and renamed into place: a killed build leaves no half-built model there.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    write_recipe(tmp)
    (tmp / MARKER).write_text("ok\n")
    if not is_built(path):  # another process may have finished first
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, path)
        except OSError:
            if not is_built(path):
                raise
    shutil.rmtree(tmp, ignore_errors=True)
    return path
