"""Transformers inference for any image-text model: the one loader, and greedy batched generation.

Loads a hub id or a local directory the way its family says (backends/families: native code or the
Auto classes), optionally with a peft LoRA adapter on top. Knows nothing about any task: requests
in, text out. The caller (harness.models) has already applied the remote-code policy.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from backends.base import Generation, GenerationRequest
from backends.chat import apply_image_budget, encode_prompts
from backends.devices import pick_device, pick_dtype
from backends.families import (
    GENERIC,
    Family,
    check_supported,
    family_for_model_type,
    family_of,
    get_family,
    model_type_of_dir,
)
from harness.core.errors import HarnessError
from harness.core.schema import ModelInfo

QUANTIZATIONS = (None, "nf4")


def check_quantization(quantization: str | None, device: str) -> None:
    """4-bit needs a CUDA GPU and bitsandbytes: say so plainly instead of failing deep inside."""
    if quantization not in QUANTIZATIONS:
        raise HarnessError(f"unknown quantization {quantization!r}; valid: nf4")
    if quantization is None:
        return
    import torch

    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        raise HarnessError("4-bit (--qlora) needs a CUDA GPU (bitsandbytes); none is available here")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise HarnessError("4-bit (--qlora) needs bitsandbytes: pip install bitsandbytes") from err


def _quantization_config(quantization: str | None, family: Family):
    if quantization is None:
        return None
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        llm_int8_skip_modules=list(family.not_quantized),  # the skip list applies to 4-bit too
    )


def model_family(info: ModelInfo) -> Family:
    """The family that loads ``info``: its own, or for the generic one, what a local checkpoint's
    config says it is (a hub checkpoint's config is read by the Auto classes when it loads)."""
    family = get_family(info.family)
    if family.name == GENERIC and Path(info.path).is_dir():
        family = family_for_model_type(model_type_of_dir(info.path))
    check_supported(family, f"model {info.name!r}")
    return family


def _auto_class(info: ModelInfo):
    """The Auto class a remote-code repository registers (Phi-3-Vision registers a causal LM)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    if not info.trust_remote_code:
        return AutoModelForImageTextToText
    config = AutoConfig.from_pretrained(info.path, revision=info.revision, trust_remote_code=True)
    auto_map = getattr(config, "auto_map", None) or {}
    if "AutoModelForImageTextToText" not in auto_map and "AutoModelForCausalLM" in auto_map:
        return AutoModelForCausalLM
    return AutoModelForImageTextToText


def load_model_and_processor(
    model_info: ModelInfo,
    device: str | None = None,
    dtype: Any = None,
    *,
    load_adapter: bool = True,
    quantization: str | None = None,
):
    """The one model loader (evaluation, training, QLoRA, export): ``(model, processor, device)``.

    Options are data: the model's own (family, attention implementation, num_crops, revision, remote
    code) in ``model_info``; the run's here. Weights load straight onto ``device`` (no host staging
    of a GPU model); ``quantization="nf4"`` keeps the family's image path and the head out of 4-bit.
    ``load_adapter=False`` returns the bare base even when ``model_info.adapter`` is set.
    """
    device = pick_device(device)
    check_quantization(quantization, device)
    family = model_family(model_info)
    common = {
        "dtype": pick_dtype(device, dtype),
        "attn_implementation": model_info.attn_implementation,
        "device_map": {"": device},
        "quantization_config": _quantization_config(quantization, family),
        # transformers >= 5.25 swaps layers for kernels it downloads from the hub at load time on a
        # GPU: unpinned code (a benchmark would change under its revision pin), and offline the load fails.
        "use_kernels": False,
    }
    source = model_info.path
    try:
        if family.load is not None and not model_info.trust_remote_code:
            local = source if Path(source).is_dir() else _download(source, model_info.revision)
            model, processor = family.load(local, num_crops=model_info.num_crops, **common)
        else:
            model, processor = _load_auto(model_info, common)
    except (OSError, ValueError) as err:  # hub errors (offline, missing repo) are OSErrors too
        raise HarnessError(f"cannot load model {model_info.name!r} from {source!r}: {err}") from err
    check_supported(family_of(model), f"model {model_info.name!r}")
    setting = apply_image_budget(family_of(model), processor, model_info.max_image_tokens)
    if setting:
        print(f"--max-image-tokens {model_info.max_image_tokens}: {setting}", file=sys.stderr)
    if load_adapter and model_info.adapter:
        model = _with_adapter(model, model_info.adapter)
    model.eval()
    return model, processor, device


def load_processor(model_info: ModelInfo):
    """The model's processor alone (no weights), with ``--max-image-tokens`` applied: what a prompt
    and its images become, known before any GPU time is spent."""
    family = model_family(model_info)
    source = model_info.path
    try:
        if family.load_processor is not None and not model_info.trust_remote_code:
            local = source if Path(source).is_dir() else _download(source, model_info.revision)
            processor = family.load_processor(local, num_crops=model_info.num_crops)
        else:
            processor = _auto_processor(model_info)
    except (OSError, ValueError) as err:
        raise HarnessError(
            f"cannot load the processor of {model_info.name!r} from {source!r}: {err}"
        ) from err
    apply_image_budget(family, processor, model_info.max_image_tokens)
    return processor


def _auto_processor(model_info: ModelInfo):
    from transformers import AutoProcessor

    kwargs: dict[str, Any] = {"revision": model_info.revision}
    if model_info.trust_remote_code:
        kwargs["trust_remote_code"] = True
    extra = {"num_crops": model_info.num_crops} if model_info.num_crops else {}
    try:
        return AutoProcessor.from_pretrained(model_info.path, **kwargs, **extra)
    except ImportError as err:
        if "torchvision" not in str(err).lower():
            raise
        raise HarnessError(
            f"model {model_info.name!r}: its processor needs torchvision (its video half does, even for "
            "images): install the torchvision build that matches your torch"
        ) from err


def _load_auto(model_info: ModelInfo, common: dict[str, Any]):
    kwargs: dict[str, Any] = {"revision": model_info.revision}
    if model_info.trust_remote_code:
        kwargs["trust_remote_code"] = True
    processor = _auto_processor(model_info)
    model, loading = _auto_class(model_info).from_pretrained(
        model_info.path, output_loading_info=True, **common, **kwargs
    )
    _warn_missing(model_info, loading)
    return model, processor


def _warn_missing(model_info: ModelInfo, loading: dict) -> None:
    """Weights the checkpoint lacks are random: always said (the libraries' own notice may be muted)."""
    missing = sorted(loading.get("missing_keys") or [])
    if missing:
        print(
            f"WARNING: {len(missing)} weights of {model_info.name!r} are not in its checkpoint and are "
            f"randomly initialised (e.g. {', '.join(missing[:3])}): its numbers are at risk",
            file=sys.stderr,
        )


def _download(repo_id: str, revision: str | None) -> str:
    """A hub repository at ``revision`` as a local directory (the native loader reads directories)."""
    from huggingface_hub import snapshot_download

    return snapshot_download(repo_id, revision=revision)


def _with_adapter(model, adapter: str):
    from peft import PeftModel

    if not (Path(adapter) / "adapter_config.json").is_file():
        raise HarnessError(f"adapter {adapter!r}: no adapter_config.json (not a peft adapter directory)")
    # Unmerged, as the training callback saw it: merging into bf16 weights rounds away every LoRA
    # delta below half a bf16 ulp, so the tuned model would be measured as something it is not.
    return PeftModel.from_pretrained(model, adapter)


class HFGenerator:
    """Greedy batched generation; outputs do not depend on the batch size (left padding + masks)."""

    def __init__(self, model, processor, device: str):
        self.model = model
        self.processor = processor
        self.device = device
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.dtype = next(model.parameters()).dtype
        self.stop_ids = stop_ids(model, self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.stop_ids[0]

    def render(self, messages: list[dict]) -> str:
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def release_memory(self) -> None:
        import torch

        if str(self.device).startswith("cuda"):
            torch.cuda.empty_cache()

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        import torch

        if not requests:
            return []
        settings = {(r.max_new_tokens, r.min_new_tokens) for r in requests}
        if len(settings) > 1:
            raise ValueError(f"one batch, one generation setting: got {sorted(settings, key=str)}")
        ((max_new_tokens, min_new_tokens),) = settings
        images = [list(r.images) for r in requests]  # one list per prompt: a prompt may show several
        inputs = encode_prompts(self.processor, [self.render(r.messages) for r in requests], images, "left")
        inputs = {
            k: v.to(self.device, dtype=self.dtype if v.is_floating_point() else None)
            if hasattr(v, "to")
            else v
            for k, v in inputs.items()
        }
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                do_sample=False,
                num_beams=1,
                max_new_tokens=max_new_tokens,
                min_new_tokens=min_new_tokens,
                eos_token_id=self.stop_ids,
                pad_token_id=self.pad_id,
            )
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        stops = torch.isin(new_tokens, torch.tensor(self.stop_ids, device=new_tokens.device))
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        results = []
        for text, row, n_prompt in zip(texts, stops.tolist(), prompt_tokens, strict=True):
            # A row that never produced an end token ran out of budget: it is a truncated answer.
            end = row.index(True) + 1 if True in row else None
            results.append(
                Generation(
                    text.strip(), end or len(row), "end" if end else "length", prompt_tokens=int(n_prompt)
                )
            )
        return results


def stop_ids(model, tokenizer) -> list[int]:
    """The tokens that end an answer: the model's generation config (its eos; a native loader sets the
    family's there), the family's declared stop tokens and the tokenizer's eos."""
    eos = model.generation_config.eos_token_id
    ids = list(eos) if isinstance(eos, list | tuple) else [eos] if eos is not None else []
    vocab = tokenizer.get_vocab()
    ids += [vocab[token] for token in family_of(model).stop_tokens if token in vocab]
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return list(dict.fromkeys(ids))


def load_generator(model_info: ModelInfo, *, device: str | None = None, dtype: Any = None) -> HFGenerator:
    """A generator of ``model_info`` in this process."""
    model, processor, device = load_model_and_processor(model_info, device, dtype)
    return HFGenerator(model, processor, device)
