"""What crosses the generator boundary: one request in (messages, their images, how to generate),
one Generation out. Backends know nothing about any task."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from PIL import Image


# A model directory may ship its own training overrides (backends.trl.recipe reads them).
RECIPE_FILE = "harness-recipe.json"


def image_parts(messages: list[dict]) -> list[dict]:
    """The image parts of a conversation in the chat format, in the order the model sees them."""
    return [
        part
        for message in messages
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if isinstance(part, dict) and part.get("type") == "image"
    ]


def image_paths(messages: list[dict], default: str | None = None) -> list[str]:
    """The file each image part shows (its "path"; ``default`` for a part without one), in order."""
    return [part.get("path") or default for part in image_parts(messages)]


@dataclass(frozen=True)
class GenerationRequest:
    """One conversation to answer, greedily.

    ``messages`` are in the Hugging Face chat format; their image parts (``{"type": "image", ...}``)
    are shown, in order, as ``images``. ``min_new_tokens`` is for speed benchmarks only (end tokens
    are ignored until then).
    """

    messages: list[dict]
    images: list[Image.Image] = field(default_factory=list)
    max_new_tokens: int = 64
    min_new_tokens: int | None = None

    def __post_init__(self) -> None:
        shown = len(image_parts(self.messages))
        if shown != len(self.images):
            raise ValueError(f"the messages show {shown} images but {len(self.images)} were given")


@dataclass(frozen=True)
class Generation:
    """One answer, with how it ended: "length" means it was cut at max_new_tokens (truncated)."""

    text: str
    n_tokens: int  # generated tokens, the end token included
    stop: Literal["end", "length"]
    latency_s: float | None = None  # this answer's own time (a served model answers requests in parallel)
    prompt_tokens: int | None = None


class Generator(Protocol):
    device: str  # where it runs ("cpu", "cuda:0", "server")

    def render(self, messages: list[dict]) -> str:
        """The prompt as the model sees it (recorded with each answer)."""

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        """One answer per request, in order; must not depend on how many are passed at once."""

    def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` is as an answer (sizes the generation budget)."""

    def release_memory(self) -> None:
        """After an out-of-memory error: give cached memory back before a smaller batch."""
