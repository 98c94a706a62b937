"""Rendered chat prompts (with their images) into model inputs, as the processor's own
``apply_chat_template(tokenize=True)`` makes them: the one place generation and training tokenize a
prompt, so the two see the same tokens."""

from __future__ import annotations

from typing import Any


def encode_prompts(
    processor, prompts: list[str], images: list[list] | None, padding_side: str
) -> dict[str, Any]:
    """Processor inputs (tensors) for prompts the chat template rendered.

    A template that writes the bos token itself (Gemma 3's ``{{ bos_token }}``, Llama 3's) must not
    get a second one from the tokenizer: transformers' processors skip the tokenizer's special tokens
    exactly then, and so does this. Never truncates: cutting a prompt could cut into its image tokens.
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    bos = getattr(tokenizer, "bos_token", None)
    extra = {"add_special_tokens": False} if bos and prompts and prompts[0].startswith(bos) else {}
    return processor(
        text=prompts,
        images=images if images and any(images) else None,
        padding=True,
        padding_side=padding_side,
        return_tensors="pt",
        **extra,
    )


def image_token_ids(model_or_processor) -> set[int]:
    """The placeholder ids an image occupies (besides negative ids, Phi-3-Vision's marker): the
    model config's ``image_token_id``/``image_token_index``, the processor's, and its tokenizer's
    (Gemma 3's processor names ``<start_of_image>`` there; its tokenizer names the soft token)."""
    ids = set()
    holders = (model_or_processor, getattr(model_or_processor, "config", None), getattr(model_or_processor, "tokenizer", None))  # fmt: skip
    for obj in holders:
        for attr in ("image_token_id", "image_token_index"):
            value = getattr(obj, attr, None) if obj is not None else None
            if isinstance(value, int):
                ids.add(value)
    if "<start_of_image>" in getattr(getattr(model_or_processor, "tokenizer", None), "get_vocab", dict)():
        ids.discard(
            model_or_processor.tokenizer.convert_tokens_to_ids("<start_of_image>")
        )  # a marker, one per image
    return ids


# Shapes of product photos: the most tokens an image may become is the most any of them becomes
# (tiling families choose their grid by aspect ratio; resizing ones scale each down to the cap).
PROBE_SHAPES = ((2048, 2048), (2048, 1536), (1536, 2048), (2048, 1024), (1024, 2048))


def count_image_tokens(processor, image) -> int:
    """How many tokens one image becomes in a prompt, as the processor expands it (measured, not
    estimated: the processor's own resizing, tiling and placeholder expansion)."""
    import torch

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = encode_prompts(processor, [prompt], [[image]], "left")["input_ids"][0]
    placeholders = torch.tensor(sorted(image_token_ids(processor)) or [-(2**31)])
    return int(((ids < 0) | torch.isin(ids, placeholders)).sum())


def most_image_tokens(processor) -> int:
    """The most tokens a large product photo becomes at the processor's current settings."""
    from PIL import Image

    return max(count_image_tokens(processor, Image.new("RGB", shape, "white")) for shape in PROBE_SHAPES)


def apply_image_budget(family, processor, max_image_tokens: int | None) -> str | None:
    """Cap the tokens an image may become (``--max-image-tokens``) through the family's own setting
    (Qwen's max_pixels, Phi-3's num_crops, InternVL's tiles, ...), each step measured through the
    processor; returns the setting chosen (None: the published one already fits). A family with a
    fixed count per image, or a cap no setting reaches, stops with one line: never exceeded silently."""
    if max_image_tokens is None:
        return None
    from harness.core.errors import HarnessError

    tokens = most_image_tokens(processor)
    if tokens <= max_image_tokens:
        return None
    for setting in family.image_budget(processor, max_image_tokens) if family.image_budget else ():
        tokens = most_image_tokens(processor)
        if tokens <= max_image_tokens:
            return setting
    how = "at its smallest setting" if family.image_budget else "and has no setting that lowers it"
    raise HarnessError(
        f"--max-image-tokens {max_image_tokens}: {family.description} makes an image {tokens} tokens {how}"
    )
