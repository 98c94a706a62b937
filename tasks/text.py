"""The one text normaliser: grouping keys, exact matches and similarity all compare text through it."""

from __future__ import annotations

import re

_NON_WORD = re.compile(r"[^0-9a-z]+")


def normalise(text: str) -> str:
    """Lowercase, '&' read as 'and', punctuation and runs of whitespace collapsed to one space."""
    return _NON_WORD.sub(" ", text.lower().replace("&", " and ")).strip()
