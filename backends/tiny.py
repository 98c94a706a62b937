"""Deterministic tiny vision-language models, built offline for tests and benchmarks.

Each is a native transformers architecture at toy size with a byte-level BPE tokenizer trained on a
given corpus (carrying the family's special tokens and a chat template in its format), saved with
``save_pretrained`` so that it loads through exactly the same code path as a real checkpoint.
Random weights: the answers are nonsense until trained, but every code path is real. This module
holds what the tiny builders share and ``tiny`` itself (Llava: CLIP vision tower + Llama text
model, Phi-3 chat format); each family's own tiny model is built in its family module.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
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


def train_tokenizer(
    corpus: Iterable[str],
    special_tokens: list[str],
    *,
    chat_template: str,
    eos: str,
    pad: str,
    named: dict[str, str] | None = None,
    bos: str | None = None,
    add_bos: bool = False,
    vocab_size: int = VOCAB_SIZE,
):
    """A byte-level BPE tokenizer trained offline on ``corpus`` (sorted and de-duplicated, so the same
    corpus in any order gives the same tokenizer), with a family's special tokens, its named tokens
    (e.g. ``{"image_token": "<image>"}``, read by its processor) and its chat template. ``add_bos``:
    the tokenizer itself starts every text with ``bos`` (Llama/Mistral style; else a template may)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(sorted(set(corpus)), trainer=trainer)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=pad,
        eos_token=eos,
        bos_token=bos,
        unk_token=None,
        extra_special_tokens=named or {},
        chat_template=chat_template,
        padding_side="left",
    )


# The toy sizes every tiny family shares: big enough that batching pays off and a short LoRA learns
# the catalog's answer format, small enough that a test builds, trains and evaluates in seconds.
TEXT = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 2048, "tie_word_embeddings": False}  # fmt: skip
VISION = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}


def finish_tiny(path: Path, model, processor, *, eos: list[int], pad: int, bos: int | None = None) -> Path:
    """Set the tiny model's generation tokens (greedy, stops at the family's end tokens) and save it
    with its processor and the tiny recipe (:func:`save_built`)."""
    model.generation_config.eos_token_id = eos if len(eos) > 1 else eos[0]
    model.generation_config.pad_token_id = pad
    model.generation_config.bos_token_id = bos

    def save(directory: Path) -> None:
        model.save_pretrained(directory)
        processor.save_pretrained(directory)
        write_recipe(directory)

    return save_built(path, save)


def seeded(build: Callable[[], object]):
    """``build()`` under the tiny models' fixed torch seed, without touching the caller's RNG."""
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        return build().eval()


def save_built(path: Path, save: Callable[[Path], None], marker: str = MARKER) -> Path:
    """Write a built model through ``save(directory)`` beside ``path`` and rename it into place with
    ``marker`` written last: a killed build never leaves a directory that looks complete, and of two
    processes building the same model, the first to finish wins (the builds are identical)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save(tmp)
    (tmp / marker).write_text("ok\n")
    if not (path / marker).is_file():
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, path)
        except OSError:
            if not (path / marker).is_file():
                raise
    shutil.rmtree(tmp, ignore_errors=True)
    return path


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

    tokenizer = train_tokenizer(
        corpus, SPECIAL_TOKENS, chat_template=CHAT_TEMPLATE, eos="<|end|>", pad="<pad>",
        named={"image_token": IMAGE_TOKEN},
    )  # fmt: skip
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

    def save(directory: Path) -> None:
        model.save_pretrained(directory)
        processor.save_pretrained(directory)
        write_recipe(directory)

    return save_built(path, save)
