"""Examples -> training batches: every image through the processor, labels on the answer only."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from harness.core.errors import HarnessError


@dataclass(frozen=True)
class Example:
    """One training or validation item: what the user says, what the model should answer, the image."""

    id: str
    messages: list[dict]
    target: str
    image: str  # local path


def _tokenizer(processor):
    return getattr(processor, "tokenizer", processor)


def end_of_turn(processor) -> tuple[str, list[int]]:
    """What follows an answer, as the model's own chat template ends an assistant turn, plus eos.

    Rendered, not assumed: the Phi-3 family gives ``<|end|>\\n`` then ``<|endoftext|>`` (the
    CookBook's ``{answer}<|end|>\\n<|endoftext|>``); a template that adds nothing gives just eos.
    """
    tokenizer = _tokenizer(processor)
    eos = tokenizer.eos_token_id
    if eos is None:
        raise HarnessError(f"tokenizer {type(tokenizer).__name__} has no eos token")
    marker = "\x00ANSWER\x00"
    turns = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": marker}]
    try:
        rendered = processor.apply_chat_template(turns, add_generation_prompt=False, tokenize=False)
        suffix = rendered.split(marker, 1)[1]
    except Exception:  # noqa: BLE001 - no usable template: end with eos alone
        suffix = ""
    ids = tokenizer(suffix, add_special_tokens=False)["input_ids"] if suffix else []
    return suffix, [] if eos in ids else [eos]


def image_token_ids(model_or_processor) -> set[int]:
    """The placeholder ids an image occupies (besides negative ids, Phi-3-Vision's marker)."""
    ids = set()
    for obj in (model_or_processor, getattr(model_or_processor, "config", None)):
        for attr in ("image_token_id", "image_token_index"):
            value = getattr(obj, attr, None) if obj is not None else None
            if isinstance(value, int):
                ids.add(value)
    return ids


class VisionSFTCollator:
    """Turns examples into a right-padded training batch whose labels cover the answer only.

    Each prompt goes through the processor with its image (so pixel values and image tokens are
    real); the answer is tokenized on its own and its ids appended, so the prompt/answer boundary is
    exact whatever the tokenizer merges (pitfall 5). ``labels`` is a new tensor: the Phi-3-Vision
    reference model clamps ``input_ids`` in place, which would corrupt an aliased label tensor.
    """

    def __init__(self, processor, image_ids: set[int] | None = None):
        self.processor = processor
        self.tokenizer = _tokenizer(processor)
        self.end_text, self.end_ids = end_of_turn(processor)
        self.image_ids = set(image_ids or ()) | image_token_ids(processor)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.tokenizer.eos_token_id

    def encode(self, example: dict) -> dict[str, torch.Tensor]:
        messages = example["messages"]
        if isinstance(messages, str):
            messages = json.loads(messages)
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        with Image.open(example.get("image_path") or example["image"]) as img:
            enc = self.processor(text=[prompt], images=[img.convert("RGB")], return_tensors="pt")
        prompt_ids = enc.pop("input_ids")[0]
        enc.pop("attention_mask", None)
        answer = self.tokenizer(example["target"] + self.end_text, add_special_tokens=False)["input_ids"]
        answer_ids = torch.tensor(list(answer) + self.end_ids, dtype=prompt_ids.dtype)
        input_ids = torch.cat([prompt_ids, answer_ids])
        labels = torch.cat([torch.full_like(prompt_ids, -100), answer_ids.clone()])
        masked = input_ids < 0  # Phi-3-Vision marks image slots with negative ids
        for token in self.image_ids:
            masked |= input_ids == token
        labels[masked] = -100
        return {"input_ids": input_ids, "labels": labels, **dict(enc)}

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        items = [self.encode(f) for f in features]
        width = max(len(i["input_ids"]) for i in items)
        batch: dict[str, Any] = {
            "input_ids": torch.full((len(items), width), self.pad_id, dtype=items[0]["input_ids"].dtype),
            "attention_mask": torch.zeros((len(items), width), dtype=torch.long),
            "labels": torch.full((len(items), width), -100, dtype=torch.long),
        }
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            batch["input_ids"][row, :n] = item["input_ids"]
            batch["attention_mask"][row, :n] = 1
            batch["labels"][row, :n] = item["labels"]
        for key in items[0]:  # image tensors: one row per example
            if key not in batch:
                batch[key] = torch.cat([torch.as_tensor(i[key]) for i in items])
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
