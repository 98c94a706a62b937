"""Transformers inference for any image-text model: greedy, batched, left-padded.

Loads a hub id or a local directory through the Auto classes (or the native Phi-3-Vision backend),
optionally with a peft LoRA adapter on top. Knows nothing about any task: prompts and images in,
text out. The caller (harness.models) has already applied the remote-code policy.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backends.base import Generation
from harness.core.errors import HarnessError
from harness.core.schema import ModelInfo

if TYPE_CHECKING:
    from PIL import Image

# Kept out of 4-bit quantisation whatever the family: the image path (a frozen vision tower
# quantised to NF4 loses the image) and the output head.
NOT_QUANTIZED = ["vision_embed_tokens", "vision_tower", "vision_model", "multi_modal_projector", "img_projection", "lm_head"]  # fmt: skip
QUANTIZATIONS = (None, "nf4")


def pick_device(device: str | None = None) -> str:
    import torch

    if device:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise HarnessError(f"--device {device}: no CUDA device is available")
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(device: str, dtype: Any = None):
    """bf16 on a GPU, fp32 on a CPU (bf16 matmuls on CPU are slow and change greedy outputs)."""
    import torch

    if dtype is None:
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise HarnessError(f"unknown dtype {dtype!r}; use e.g. float32, bfloat16 or float16")
        return getattr(torch, dtype)
    return dtype


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


def _quantization_config(quantization: str | None):
    if quantization is None:
        return None
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        llm_int8_skip_modules=NOT_QUANTIZED,  # the skip list applies to 4-bit too
    )


def _is_phi3v(info: ModelInfo) -> bool:
    if info.family == "phi3v":
        return True
    if not Path(info.path).is_dir():
        return False
    try:
        from backends.phi3v import is_phi3v_dir
    except ImportError:
        return False
    return bool(is_phi3v_dir(Path(info.path)))


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

    Options are data: the model's own (attention implementation, num_crops, revision, remote code)
    in ``model_info``; the run's here. Weights load straight onto ``device`` (no host staging of a
    GPU model); ``quantization="nf4"`` keeps the vision tower, projector and head out of 4-bit.
    ``load_adapter=False`` returns the bare base even when ``model_info.adapter`` is set.
    """
    device = pick_device(device)
    torch_dtype = pick_dtype(device, dtype)
    check_quantization(quantization, device)
    common = {
        "dtype": torch_dtype,
        "attn_implementation": model_info.attn_implementation,
        "device_map": {"": device},
        "quantization_config": _quantization_config(quantization),
    }
    source = model_info.path
    try:
        if _is_phi3v(model_info) and not model_info.trust_remote_code:
            from backends import phi3v

            local = source if Path(source).is_dir() else _download(source, model_info.revision)
            model, processor = phi3v.load(local, num_crops=model_info.num_crops, **common)
        else:
            from transformers import AutoProcessor

            kwargs: dict[str, Any] = {"revision": model_info.revision}
            if model_info.trust_remote_code:
                kwargs["trust_remote_code"] = True
            extra = {"num_crops": model_info.num_crops} if model_info.num_crops else {}
            processor = AutoProcessor.from_pretrained(source, **kwargs, **extra)
            model, loading = _auto_class(model_info).from_pretrained(
                source, output_loading_info=True, **common, **kwargs
            )
            _warn_missing(model_info, loading)
    except (OSError, ValueError) as err:  # hub errors (offline, missing repo) are OSErrors too
        raise HarnessError(f"cannot load model {model_info.name!r} from {source!r}: {err}") from err
    if load_adapter and model_info.adapter:
        model = _with_adapter(model, model_info.adapter)
    model.eval()
    return model, processor, device


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

    def __init__(self, model, processor, device: str, info: ModelInfo | None = None):
        self.model = model
        self.processor = processor
        self.device = device
        self.info = info
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.dtype = next(model.parameters()).dtype
        self.stop_ids = self._stop_ids()
        self.min_new_tokens: int | None = None  # benchmarks: every answer runs to the budget
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.stop_ids[0]

    def _stop_ids(self) -> list[int]:
        """The model's own end tokens: its generation config (set per family when it is built or
        loaded, e.g. Phi-3-Vision's <|end|> and <|endoftext|>) and its tokenizer's eos."""
        eos = self.model.generation_config.eos_token_id
        ids = list(eos) if isinstance(eos, list | tuple) else [eos] if eos is not None else []
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        return list(dict.fromkeys(ids))

    def render(self, messages: list[dict]) -> str:
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def release_memory(self) -> None:
        """After an out-of-memory error: hand the allocator's cached blocks back before a smaller batch."""
        import torch

        if str(self.device).startswith("cuda"):
            torch.cuda.empty_cache()

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(
        self, prompts: list[str], images: list[list[Image.Image]], max_new_tokens: int
    ) -> list[Generation]:
        import torch

        if len(prompts) != len(images):
            raise ValueError(f"{len(prompts)} prompts but {len(images)} image lists")
        if not prompts:
            return []
        images = [im for per_prompt in images for im in per_prompt]  # the processor takes them in order
        # No truncation, ever: cutting a prompt could cut into its image tokens.
        inputs = self.processor(
            text=list(prompts), images=list(images), padding=True, padding_side="left", return_tensors="pt"
        )
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
                min_new_tokens=self.min_new_tokens,
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


def load_generator(model_info: ModelInfo, device: str | None = None, dtype: Any = None) -> HFGenerator:
    model, processor, device = load_model_and_processor(model_info, device, dtype)
    return HFGenerator(model, processor, device, model_info)
