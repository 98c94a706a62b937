"""Phi3VProcessor: the official HD image transform and `<|image_N|>` expansion, batched.

Images use PIL and torch only (no torchvision). Token layout follows the official processor, including
its quirk that every text piece around an image tag is tokenized on its own and so starts with BOS.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import BatchFeature, PreTrainedTokenizerFast

ASSETS = Path(__file__).parent / "assets"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_TAG = re.compile(r"<\|image_(\d+)\|>")
# The family's stop tokens, in one place: the chat turn end <|end|> and the document end <|endoftext|>.
STOP_TOKEN_IDS = (32007, 32000)
PAD_TOKEN_ID = 32000
PREPROCESSOR_FILE = "preprocessor_config.json"

# The official template, extended so a message's content may be a list of image/text parts; string
# content renders exactly as the official one does. `{{ '\n' }}` because Jinja eats newlines after tags.
CHAT_TEMPLATE = (
    "{% set ns = namespace(images=0) %}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{% set ns.images = ns.images + 1 %}"
    "{{ '<|image_' + ns.images|string + '|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt and messages[-1]['role'] != 'assistant' %}{{ '<|assistant|>' + '\n' }}{% endif %}"
)


def hd_transform(image: Image.Image, num_crops: int, crop_size: int) -> Image.Image:
    """Resize to a grid of at most num_crops crops (width a multiple of crop_size), pad height with white."""
    image = image.convert("RGB")
    portrait = image.width < image.height
    if portrait:
        image = image.transpose(Image.Transpose.TRANSPOSE)
    ratio = image.width / image.height
    scale = 1
    while scale * math.ceil(scale / ratio) <= num_crops:
        scale += 1
    scale -= 1
    new_w = scale * crop_size
    new_h = max(1, int(new_w / ratio))
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    target = math.ceil(new_h / crop_size) * crop_size
    top = (target - new_h) // 2
    padded = Image.new("RGB", (new_w, target), (255, 255, 255))
    padded.paste(image, (0, top))
    return padded.transpose(Image.Transpose.TRANSPOSE) if portrait else padded


class Phi3VProcessor:
    """`processor(text, images)` -> input_ids (image slots negative), attention_mask, pixel_values, image_sizes."""

    def __init__(
        self,
        tokenizer,
        num_crops: int = 16,
        num_img_tokens: int = 144,
        crop_size: int = 336,
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    ):
        self.tokenizer = tokenizer
        self.tokenizer.chat_template = CHAT_TEMPLATE
        self.num_crops = int(num_crops)
        self.num_img_tokens = int(num_img_tokens)
        self.side = math.isqrt(self.num_img_tokens)
        if self.side * self.side != self.num_img_tokens:
            raise ValueError(f"num_img_tokens must be a square (tokens per crop), got {num_img_tokens}")
        self.crop_size = int(crop_size)
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)
        self.chat_template = CHAT_TEMPLATE

    # ---- images -------------------------------------------------------------------------------

    def preprocess_image(self, image: Image.Image) -> tuple[torch.Tensor, tuple[int, int]]:
        """One image -> (num_crops+1, 3, S, S) [global view, sub-crops row-major, zero crops], (H, W)."""
        hd = hd_transform(image, self.num_crops, self.crop_size)
        pixels = torch.frombuffer(bytearray(hd.tobytes()), dtype=torch.uint8).reshape(hd.height, hd.width, 3)
        pixels = pixels.permute(2, 0, 1).float().div(255)
        mean = torch.tensor(self.image_mean).view(3, 1, 1)
        std = torch.tensor(self.image_std).view(3, 1, 1)
        pixels = (pixels - mean) / std
        s = self.crop_size
        glb = F.interpolate(pixels[None], size=(s, s), mode="bicubic")
        h, w = hd.height // s, hd.width // s
        crops = pixels.reshape(3, h, s, w, s).permute(1, 3, 0, 2, 4).reshape(h * w, 3, s, s)
        out = torch.zeros(self.num_crops + 1, 3, s, s)
        out[: 1 + h * w] = torch.cat([glb, crops])
        return out, (hd.height, hd.width)

    def image_token_count(self, height: int, width: int) -> int:
        """(h*w + 1)*T + 1 + (h + 1)*sqrt(T) for an HD image of h x w crops, T tokens per crop."""
        h, w = height // self.crop_size, width // self.crop_size
        return (h * w + 1) * self.num_img_tokens + 1 + (h + 1) * self.side

    # ---- text ---------------------------------------------------------------------------------

    def tokenize_prompt(self, text: str, sizes: list[tuple[int, int]]) -> list[int]:
        """Each piece between tags tokenized on its own (with BOS, as the official processor does);
        the k-th tag must be `<|image_k|>` and becomes that image's count of id -k."""
        tags = [int(n) for n in IMAGE_TAG.findall(text)]
        if tags != list(range(1, len(tags) + 1)):
            raise ValueError(
                f"image tags must be <|image_1|>, <|image_2|>, ... in order, got {tags} in {text!r}"
            )
        pieces = IMAGE_TAG.split(text)[::2]
        ids = list(self.tokenizer(pieces[0]).input_ids)
        for k, piece in enumerate(pieces[1:], start=1):
            ids += [-k] * self.image_token_count(*sizes[k - 1])
            ids += self.tokenizer(piece).input_ids
        return ids

    def __call__(
        self, text, images=None, padding_side: str = "left", return_tensors: str = "pt", padding=True
    ) -> BatchFeature:
        """Rows are padded to the longest with <|endoftext|>; image i goes to the i-th image tag overall
        (``images`` flat, or one list per prompt)."""
        if padding not in (True, "longest"):
            raise ValueError(f"padding: only padding to the longest prompt is supported, got {padding!r}")
        texts = [text] if isinstance(text, str) else list(text)
        images = [im for item in images or [] for im in (item if isinstance(item, list | tuple) else [item])]
        processed = [self.preprocess_image(image) for image in images]
        sizes = [size for _, size in processed]
        rows, used = [], 0
        for prompt in texts:
            n = len(IMAGE_TAG.findall(prompt))
            if used + n > len(images):
                raise ValueError(f"the prompts have more image tags than the {len(images)} images given")
            rows.append(self.tokenize_prompt(prompt, sizes[used : used + n]))
            used += n
        if used != len(images):
            raise ValueError(f"{len(images)} images given but the prompts have {used} image tags")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            span = slice(width - len(row), width) if padding_side == "left" else slice(0, len(row))
            input_ids[i, span] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, span] = 1
        data = {"input_ids": input_ids, "attention_mask": attention_mask}
        if processed:
            data["pixel_values"] = torch.stack([pixels for pixels, _ in processed])
            data["image_sizes"] = torch.tensor(sizes, dtype=torch.long)
        return BatchFeature(data, tensor_type=return_tensors)

    def apply_chat_template(
        self, messages, add_generation_prompt: bool = True, tokenize: bool = False, **kwargs
    ):
        return self.tokenizer.apply_chat_template(
            messages,
            chat_template=self.chat_template,
            add_generation_prompt=add_generation_prompt,
            tokenize=tokenize,
            **kwargs,
        )

    def batch_decode(self, ids, skip_special_tokens: bool = True, **kwargs) -> list[str]:
        """Decodes rows that may still hold the prompt's negative image ids (they are dropped)."""
        rows = ids.tolist() if isinstance(ids, torch.Tensor) else ids
        rows = [[int(i) for i in row if int(i) >= 0] for row in rows]
        return self.tokenizer.batch_decode(rows, skip_special_tokens=skip_special_tokens, **kwargs)

    def decode(self, ids, skip_special_tokens: bool = True, **kwargs) -> str:
        return self.batch_decode([ids], skip_special_tokens=skip_special_tokens, **kwargs)[0]

    # ---- files --------------------------------------------------------------------------------

    def save_pretrained(self, path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(path)
        config = {
            "image_processor_type": "Phi3VImageProcessor",
            "processor_class": "Phi3VProcessor",
            "num_crops": self.num_crops,
            "num_img_tokens": self.num_img_tokens,
            "crop_size": self.crop_size,
            "image_mean": self.image_mean,
            "image_std": self.image_std,
        }
        (path / PREPROCESSOR_FILE).write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, path=ASSETS, num_crops: int | None = None, **overrides) -> Phi3VProcessor:
        """From a saved or an official directory (preprocessor_config.json + tokenizer files)."""
        path = Path(path)
        config_file = path / PREPROCESSOR_FILE
        config = json.loads(config_file.read_text()) if config_file.exists() else {}
        tokenizer = PreTrainedTokenizerFast.from_pretrained(
            path if (path / "tokenizer.json").exists() else ASSETS
        )
        keys = ("num_crops", "num_img_tokens", "crop_size", "image_mean", "image_std")
        kwargs = {k: config[k] for k in keys if k in config}
        model_config = path / "config.json"
        if "crop_size" not in kwargs and model_config.exists():
            # The official file has no crop size: it is the CLIP tower's (336 unless a vision_config says so).
            vision = json.loads(model_config.read_text()).get("vision_config") or {}
            kwargs["crop_size"] = vision.get("image_size", 336)
        if num_crops is not None:
            kwargs["num_crops"] = num_crops
        return cls(tokenizer, **{**kwargs, **overrides})


def set_generation_tokens(model) -> None:
    """Greedy generation of a Phi-3-Vision model stops at the family's stop tokens and pads with <|endoftext|>."""
    model.generation_config.eos_token_id = list(STOP_TOKEN_IDS)
    model.generation_config.pad_token_id = PAD_TOKEN_ID
