"""Examples -> training batches: every image through the processor, labels on the answer only."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from backends.base import image_paths
from backends.chat import encode_prompts, image_token_ids
from harness.core.errors import HarnessError

MARKER = "\x00ANSWER\x00"


@dataclass(frozen=True)
class Example:
    """One training or validation item: what the user says, what the model should answer, the image."""

    id: str
    messages: list[dict]
    target: str
    image: str  # local path


def _tokenizer(processor):
    return getattr(processor, "tokenizer", processor)


def answer_frame(processor) -> tuple[str, str, list[int]]:
    """How the model's own chat template frames an answer: what it writes between the generation
    prompt and the answer, what ends the turn, and the eos ids to add when that end holds no eos.

    Rendered, not assumed: Phi-3 gives ``("", "<|end|>\\n", [<|endoftext|>])`` (the CookBook's
    ``{answer}<|end|>\\n<|endoftext|>``); SmolVLM's ``Assistant:`` is followed by a space before the
    answer. Probed with list content (every multimodal template takes it; some take nothing else),
    then plain strings; a template that renders neither frames the answer with eos alone, and says so.
    """
    tokenizer = _tokenizer(processor)
    eos = tokenizer.eos_token_id
    if eos is None:
        raise HarnessError(f"tokenizer {type(tokenizer).__name__} has no eos token")
    for wrap in (lambda text: [{"type": "text", "text": text}], lambda text: text):
        question = [{"role": "user", "content": wrap("Q")}]
        try:
            full = processor.apply_chat_template([*question, {"role": "assistant", "content": wrap(MARKER)}], add_generation_prompt=False, tokenize=False)  # fmt: skip
            prompt = processor.apply_chat_template(question, add_generation_prompt=True, tokenize=False)
        except Exception:  # noqa: BLE001 - this content form is not one the template takes
            continue
        if MARKER in full:
            before, after = full.split(MARKER, 1)
            prefix = before[len(prompt) :] if before.startswith(prompt) else ""
            ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
            return prefix, after, [] if eos in ids else [eos]
    warnings.warn(
        f"{type(processor).__name__}: its chat template renders no assistant turn; training targets end with eos alone",
        stacklevel=2,
    )
    return "", "", [eos]


def _images(example: dict, messages: list[dict]) -> list[Image.Image]:
    """The images a conversation shows, in order: each image part's own file, else the example's."""
    images = []
    for path in image_paths(messages, example.get("image_path") or example.get("image")):
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    return images


class VisionSFTCollator:
    """Turns examples into a right-padded training batch whose labels cover the answer only.

    The prompts of a batch go through the processor together with their images (so pixel values,
    image tokens and every per-token input a family needs are the processor's own, padded by it);
    each answer is tokenized on its own and its ids appended to its prompt, so the prompt/answer
    boundary is exact whatever the tokenizer merges (pitfall 5). Per-token inputs the processor
    returns beside the ids (Gemma 3's ``token_type_ids``, Qwen's ``mm_token_type_ids``) are extended
    over the answer as text. ``labels`` is a new tensor: the Phi-3-Vision reference model clamps
    ``input_ids`` in place, which would corrupt an aliased label tensor.
    """

    def __init__(self, processor, image_ids: set[int] | None = None):
        self.processor = processor
        self.tokenizer = _tokenizer(processor)
        self.prefix, self.end_text, self.end_ids = answer_frame(processor)
        self.image_ids = set(image_ids or ()) | image_token_ids(processor)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.tokenizer.eos_token_id

    def answer_ids(self, target: str) -> list[int]:
        text = self.prefix + target + self.end_text
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + self.end_ids

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        prompts, images, answers = [], [], []
        for feature in features:
            messages = feature["messages"]
            if isinstance(messages, str):
                messages = json.loads(messages)
            prompts.append(
                self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            )
            images.append(_images(feature, messages))
            answers.append(self.answer_ids(feature["target"]))
        enc = encode_prompts(self.processor, prompts, images, "right")
        ids, mask = enc.pop("input_ids"), enc.pop("attention_mask")
        lengths = mask.sum(dim=1).tolist()
        per_token = [k for k, v in enc.items() if isinstance(v, torch.Tensor) and v.shape == ids.shape]
        width = max(n + len(a) for n, a in zip(lengths, answers, strict=True))
        batch: dict[str, Any] = {
            "input_ids": torch.full((len(features), width), self.pad_id, dtype=ids.dtype),
            "attention_mask": torch.zeros((len(features), width), dtype=mask.dtype),
            "labels": torch.full((len(features), width), -100, dtype=torch.long),
            **{k: torch.zeros((len(features), width), dtype=enc[k].dtype) for k in per_token},
        }
        for row, (n, answer) in enumerate(zip(lengths, answers, strict=True)):
            answer_ids = torch.tensor(answer, dtype=ids.dtype)
            total = n + len(answer)
            batch["input_ids"][row, :total] = torch.cat([ids[row, :n], answer_ids])
            batch["attention_mask"][row, :total] = 1
            batch["labels"][row, n:total] = (
                answer_ids  # the prompt (its images too) and the padding stay -100
            )
            for key in per_token:  # the answer is text: 0, as the processor marks text
                batch[key][row, :n] = enc[key][row, :n]
        masked = batch["input_ids"] < 0  # Phi-3-Vision marks image slots with negative ids
        for token in self.image_ids:
            masked |= batch["input_ids"] == token
        batch["labels"][masked] = -100
        batch.update({k: v for k, v in enc.items() if k not in per_token})  # pixel values, image sizes...
        return batch


def to_dataset(examples: list[Example]):
    from datasets import Dataset

    # Messages travel as JSON: Arrow would otherwise unify the content dicts and add `text: None`.
    # "image_path", not "image": TRL would take an "image" column for its own vision pipeline.
    return Dataset.from_list(
        [
            {"id": e.id, "messages": json.dumps(e.messages), "target": e.target, "image_path": e.image}
            for e in examples
        ]
    )
