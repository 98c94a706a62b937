"""The Generator protocol: who answers. Backends know nothing about any task."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from PIL import Image


# A model directory may ship its own training overrides (backends.trl.recipe reads them).
RECIPE_FILE = "harness-recipe.json"


@dataclass(frozen=True)
class Generation:
    """One answer, with how it ended: "length" means it was cut at max_new_tokens (truncated)."""

    text: str
    n_tokens: int  # generated tokens, the end token included
    stop: Literal["end", "length"]
    latency_s: float | None = None  # this answer's own time (a served model answers requests in parallel)
    prompt_tokens: int | None = None  # as a server reports its usage


class Generator(Protocol):
    def render(self, messages: list[dict]) -> str:
        """The exact prompt text the model sees for these chat messages (generation prompt added)."""

    def generate(
        self, prompts: list[str], images: list[Image.Image], max_new_tokens: int
    ) -> list[Generation]:
        """Greedy answers, one per (prompt, image) pair; must not depend on how many are passed at once."""

    def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` is as an answer (sizes the generation budget)."""
