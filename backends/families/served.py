"""Served models: any model behind an OpenAI-compatible API (vLLM, SGLang, TGI, `transformers serve`)."""

from __future__ import annotations

from backends.families import Family, register

SERVED = "api"

register(Family(SERVED, "a model served over an OpenAI-compatible API (openai:<model>@<url>)", backend="api"))
