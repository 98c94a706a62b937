"""Served models: an OpenAI-compatible chat-completions server answers (vLLM, SGLang, TGI...).

Requests in, text out, over ``POST {endpoint}/chat/completions`` through the ``openai`` client,
which owns the timeouts and the retries (exponential backoff on connection errors, 408, 409, 429 and
5xx, honouring ``Retry-After``). The generation loop keeps ``concurrency`` requests in flight (the
client is thread-safe). A request that still fails after the client's retries raises, so that the
caller can tell which sample it was.

The API key comes from the environment only (``HARNESS_API_KEY``, else ``OPENAI_API_KEY``, else
"EMPTY", which local servers accept) and lives only inside the HTTP client: it is in no ModelInfo,
no prompt, no repr, and a generator refuses to be pickled. Knows nothing about any task.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import time
from typing import TYPE_CHECKING, Any

from backends.base import Generation, GenerationRequest
from harness.core.errors import HarnessError, one_line
from harness.core.schema import ModelInfo

if TYPE_CHECKING:
    from PIL import Image

# Defaults; the environment overrides them per process (HARNESS_API_TIMEOUT, HARNESS_API_RETRIES).
TIMEOUT_S = 120.0  # per request (a long answer on a busy server takes a while)
MAX_RETRIES = 5  # the client's own retries with backoff, after the first try
KEY_VARIABLES = ("HARNESS_API_KEY", "OPENAI_API_KEY")
NO_KEY = "EMPTY"  # what vLLM, SGLang, TGI and `transformers serve` accept when started without a key
# What a server reports about a model that changes between two identical calls: vLLM, SGLang and TGI
# stamp `created` with the time of the request, vLLM's `permission` carries a fresh id, `transformers
# serve` says whether the model is loaded at the moment.
VOLATILE = frozenset({"created", "status", "permission"})


def _api_key() -> str:
    for variable in KEY_VARIABLES:
        if os.environ.get(variable):
            return os.environ[variable]
    return NO_KEY


def _setting(variable: str, default: float, kind: type) -> Any:
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return kind(default)
    try:
        value = kind(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise HarnessError(f"{variable}={raw!r}: expected a non-negative {kind.__name__}")
    return value


def _openai():
    try:
        import openai
    except ImportError as err:
        raise HarnessError("served models need the openai client: pip install 'harness[serve]'") from err
    return openai


def _client(endpoint: str):
    """An OpenAI client for ``endpoint``: the key from the environment, the module's timeout and retries."""
    return _openai().OpenAI(
        base_url=endpoint,
        api_key=_api_key(),
        timeout=_setting("HARNESS_API_TIMEOUT", TIMEOUT_S, float),
        max_retries=_setting("HARNESS_API_RETRIES", MAX_RETRIES, int),
    )


def served_models(endpoint: str) -> list[dict]:
    """What ``GET {endpoint}/models`` reports, one dict per served model (only the fields it sent)."""
    openai = _openai()
    try:
        return [model.to_dict() for model in _client(endpoint).models.list()]
    except openai.APIConnectionError as err:  # refused, unresolvable, timed out (after the retries)
        raise HarnessError(f"cannot reach the model server at {endpoint}: {one_line(err)}") from err
    except openai.APIStatusError as err:
        hint = (
            f" (the key comes from ${' or $'.join(KEY_VARIABLES)})" if err.status_code in (401, 403) else ""
        )
        raise HarnessError(
            f"the model server at {endpoint} answered GET /models with HTTP {err.status_code}: "
            f"{one_line(err)}{hint}"
        ) from err
    except (openai.OpenAIError, ValueError, TypeError) as err:  # not an OpenAI-compatible answer
        raise HarnessError(
            f"{endpoint}/models: not an OpenAI-compatible model list: {one_line(err)}"
        ) from err


def server_identity(info: ModelInfo) -> str:
    """A short hash of what the server at ``info.endpoint`` reports about the model ``info.path``.

    The fields a server reports (vLLM: ``root``, the weights it loaded; ``max_model_len``; ``owned_by``;
    ``parent`` for a LoRA module...) minus the volatile ones (``created``, ``status``, ``permission``):
    the same served model gives the same string, a server that now serves other weights under the
    same name (another root, another context length) a different one.
    """
    if not info.endpoint:
        raise HarnessError(f"model {info.name!r}: a served model needs an endpoint (openai:<model>@<url>)")
    models = served_models(info.endpoint)
    entry = next((m for m in models if m.get("id") == info.path), None)
    if entry is None:
        served = ", ".join(repr(m.get("id")) for m in models) or "none"
        raise HarnessError(
            f"the model server at {info.endpoint} does not serve {info.path!r}; it serves: {served}"
        )
    stable = {k: v for k, v in entry.items() if k not in VOLATILE and v is not None}
    return hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _placeholder(part: Any) -> Any:
    if isinstance(part, dict) and part.get("type") == "image":
        return {"type": "image"}  # the file's path is not what the model sees
    return part


def _data_url(image: Image.Image) -> str:
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def with_images(messages: list[dict], images: list[Image.Image]) -> list[dict]:
    """The k-th image placeholder of ``messages`` replaced by the k-th image, as a PNG data URL."""
    images = list(images)
    used = 0
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image":
                    if used >= len(images):
                        raise ValueError(f"the prompt shows more images than the {len(images)} given")
                    parts.append({"type": "image_url", "image_url": {"url": _data_url(images[used])}})
                    used += 1
                else:
                    parts.append(part)
            message = {**message, "content": parts}
        out.append(message)
    if used != len(images):
        raise ValueError(f"the prompt shows {used} images but {len(images)} were given")
    return out


class APIGenerator:
    """Greedy answers of a served model."""

    device = "server"
    dtype = "server"

    def __init__(self, info: ModelInfo):
        if not info.endpoint:
            raise HarnessError(
                f"model {info.name!r}: a served model needs an endpoint (openai:<model>@<url>)"
            )
        self.info = info
        self.model = info.path  # the served model's name, as the server lists it
        self.endpoint = info.endpoint
        self._client = _client(info.endpoint)  # holds the API key: never serialised
        self._send_seed = True  # until the server refuses it

    def __repr__(self) -> str:
        return f"APIGenerator({self.model!r} at {self.endpoint})"

    def __getstate__(self):
        raise TypeError("an APIGenerator holds an API client (and its key): it is not pickled")

    def render(self, messages: list[dict]) -> str:
        """The chat messages as sorted JSON, image parts as ``{"type": "image"}`` placeholders."""
        rendered = []
        for message in messages:
            content = message.get("content")
            if isinstance(content, list):
                message = {**message, "content": [_placeholder(p) for p in content]}
            rendered.append(message)
        return json.dumps(rendered, sort_keys=True, ensure_ascii=False)

    def count_tokens(self, text: str) -> int:
        """UTF-8 bytes of ``text``, an upper bound of its tokens: the server's tokenizer is not available
        here, and a byte-level BPE tokenizer (GPT-2, Llama 3, Qwen...) never makes more tokens than bytes
        (a SentencePiece one with byte fallback, as Phi-3's, at most one more for its leading space, which
        the budget's margin covers). A budget sized from this never cuts a well-formed answer; it only
        allows more than needed, and a model stops at its end token anyway."""
        return len(text.encode("utf-8"))

    def release_memory(self) -> None:
        """The server manages its own memory."""

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        """The answers, one request after another: the generation loop keeps several calls of this in
        flight (``--concurrency``, harness/generation.py), so no batch waits on its slowest request."""
        return [self._answer(r) for r in requests]

    def _answer(self, request: GenerationRequest) -> Generation:
        messages = with_images(request.messages, request.images)
        t0 = time.perf_counter()
        response = self._create(messages, request.max_new_tokens)
        latency = time.perf_counter() - t0
        if not response.choices:
            raise RuntimeError(f"{self.endpoint}: an answer without choices")
        choice = response.choices[0]
        text = (choice.message.content or "").strip()
        stop = "length" if choice.finish_reason == "length" else "end"
        usage = response.usage
        n_tokens = getattr(usage, "completion_tokens", None)
        if n_tokens is None:  # no usage reported: the budget when cut, else an upper bound
            budget = request.max_new_tokens
            n_tokens = budget if stop == "length" else min(self.count_tokens(text), budget)
        return Generation(text, n_tokens, stop, latency, getattr(usage, "prompt_tokens", None))

    def _create(self, messages: list[dict], max_new_tokens: int):
        openai = _openai()
        request = {"model": self.model, "messages": messages, "max_tokens": max_new_tokens, "temperature": 0}
        if self._send_seed:
            try:
                return self._client.chat.completions.create(**request, seed=0)
            except openai.APIStatusError as err:  # a server that rejects `seed` (400/422): greedy anyway
                if err.status_code not in (400, 422) or "seed" not in str(err).lower():
                    raise
                self._send_seed = False
        return self._client.chat.completions.create(**request)


def load_generator(model_info: ModelInfo, *, device: str | None = None, dtype: Any = None) -> APIGenerator:
    """A generator for ``openai:<model>@<url>``; ``device`` and ``dtype`` are the server's business."""
    return APIGenerator(model_info)
