"""The Generator protocol: who answers. Backends know nothing about any task."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from PIL import Image


class Generator(Protocol):
    def render(self, messages: list[dict]) -> str:
        """The exact prompt text the model sees for these chat messages (generation prompt added)."""

    def generate(self, prompts: list[str], images: list[Image.Image], max_new_tokens: int) -> list[str]:
        """Greedy answers, one per (prompt, image) pair; must not depend on how many are passed at once."""
