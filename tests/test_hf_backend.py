"""The hf backend on the tiny Llava model: batching, images, adapters, remote code, the tiny build."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from backends import get_backend
from backends.hf import load_generator, load_model_and_processor
from backends.tiny import MARKER, build_tiny
from conftest import requests
from harness.core.errors import HarnessError
from harness.core.schema import ModelInfo
from harness.models import resolve

CORPUS = [f"Check Scarf {i} Accessories ${i * 10}.00" for i in range(200)] + ["0123456789 .,$:"]


@pytest.fixture(scope="module")
def tiny() -> ModelInfo:
    return resolve("tiny")


@pytest.fixture(scope="module")
def generator(tiny):
    return load_generator(tiny, device="cpu")


@pytest.fixture(scope="module", params=["tiny", "tiny-phi3v"])
def any_generator(request, generator):
    """The generic Llava path and the native Phi-3-Vision path of the same generator."""
    return generator if request.param == "tiny" else load_generator(resolve(request.param), device="cpu")


def noise(seed: int, size: int = 48) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def prompts(n: int) -> list[list[dict]]:
    # Different prompt lengths so that left padding really happens inside a batch.
    texts = ["Name the product." + " Answer now." * (i % 4) for i in range(n)]
    return [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": t}]}] for t in texts]


def test_render_uses_phi3_chat_format(generator):
    text = generator.render(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}]
    )
    assert text == "<|user|>\n<image>Hi<|end|>\n<|assistant|>\n"


def test_batch_size_does_not_change_greedy_outputs(any_generator):
    generator = any_generator
    ps, ims = prompts(12), [[noise(i)] for i in range(12)]
    one_by_one = [generator.generate(requests([p], [im], 24))[0] for p, im in zip(ps, ims, strict=True)]
    batched = generator.generate(requests(ps[:8], ims[:8], 24)) + generator.generate(
        requests(ps[8:], ims[8:], 24)
    )
    assert batched == one_by_one
    assert len(set(one_by_one)) > 1  # not a degenerate constant answer


def test_image_reaches_the_model(any_generator):
    generator = any_generator
    ps = prompts(1) * 6
    flat = [[Image.new("RGB", (48, 48), (i * 40, 255 - i * 40, 128))] for i in range(6)]
    noisy = [[noise(100 + i)] for i in range(6)]
    assert generator.generate(requests(ps, flat, 16)) != generator.generate(requests(ps, noisy, 16))


def test_decodes_only_new_tokens_within_budget_and_stops_at_end(generator, monkeypatch):
    seen = []
    decode = generator.tokenizer.batch_decode
    monkeypatch.setattr(
        generator.tokenizer, "batch_decode", lambda ids, **kw: seen.append(ids) or decode(ids, **kw)
    )
    ps, ims = prompts(8), [[noise(i)] for i in range(8)]
    generator.generate(requests(ps, ims, 12))
    (ids,) = seen
    assert ids.shape[0] == 8 and ids.shape[1] <= 12  # new tokens only (the prompts are ~40 tokens)
    assert "<|end|>" in generator.tokenizer.convert_ids_to_tokens(generator.stop_ids)
    for row in ids.tolist():  # after a stop token only padding follows
        stops = [i for i, t in enumerate(row) if t in generator.stop_ids]
        if stops:
            assert all(t == generator.pad_id for t in row[stops[0] + 1 :])


def test_lora_adapter_loads_on_its_base_and_changes_outputs(tiny, generator, tmp_path):
    from peft import LoraConfig, get_peft_model

    model, _, _ = load_model_and_processor(tiny, device="cpu")
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(tmp_path / "adapter")

    tuned = load_generator(tiny.model_copy(update={"adapter": str(tmp_path / "adapter")}), device="cpu")
    ps, ims = prompts(4), [[noise(i)] for i in range(4)]
    expected = load_generator(tiny, device="cpu")
    expected.model = peft_model.eval()  # the adapter as trained, unmerged
    assert tuned.generate(requests(ps, ims, 16)) == expected.generate(requests(ps, ims, 16))
    assert tuned.generate(requests(ps, ims, 16)) != generator.generate(requests(ps, ims, 16))


def test_adapter_dir_without_config_is_a_clear_error(tiny, tmp_path):
    with pytest.raises(HarnessError, match="adapter_config.json"):
        load_generator(tiny.model_copy(update={"adapter": str(tmp_path)}), device="cpu")


@pytest.mark.parametrize("revision", [None, "main"])
def test_trust_remote_code_needs_a_pinned_revision(revision):
    # The policy lives with model identity (harness.models), applied before any loader runs.
    with pytest.raises(HarnessError, match="pinned --revision"):
        resolve("org/model", revision=revision, trust_remote_code=True)


def test_missing_model_is_a_harness_error(tmp_path):
    with pytest.raises(HarnessError, match="cannot load model"):
        load_generator(ModelInfo(name="x", path=str(tmp_path)), device="cpu")


def test_backend_registry():
    assert get_backend("hf").load_generator is load_generator
    with pytest.raises(HarnessError, match="valid backends: api, hf"):
        get_backend("nope")


def digests(path):
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in path.iterdir()}


def test_tiny_build_is_deterministic_and_rebuilds_half_built_dirs(tmp_path):
    a = build_tiny(tmp_path / "a", CORPUS)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.json").write_text("{half")  # a killed build: no marker
    b = build_tiny(tmp_path / "b", reversed(CORPUS))
    assert (b / MARKER).is_file()
    assert digests(a) == digests(b)


def test_hub_model_not_in_the_cache_is_a_clear_error_offline():
    with pytest.raises(
        HarnessError, match="cannot load model 'phi-3-vision' from 'microsoft/Phi-3-vision-128k-instruct'"
    ):
        load_generator(resolve("phi-3-vision"), device="cpu")
    with pytest.raises(HarnessError, match="cannot load model 'org/none'"):
        load_generator(resolve("org/none"), device="cpu")


def test_tuned_model_is_measured_unmerged_as_trained_in_bf16(tmp_path):
    """LoRA deltas below half a bf16 ulp vanish when merged into bf16 weights: the harness must
    evaluate the adapter as the training callback saw it (unmerged), not a rounded-away merge."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    info = resolve("tiny-phi3v")
    base, processor, _ = load_model_and_processor(info, device="cpu", dtype="bfloat16")
    targets = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    peft_model = get_peft_model(
        base, LoraConfig(r=8, lora_alpha=16, target_modules=targets, init_lora_weights=False)
    )
    with torch.no_grad():  # every delta far below half an ulp of a typical bf16 weight (~6e-5)
        for module in peft_model.modules():
            if hasattr(module, "lora_B") and "default" in getattr(module, "lora_B", {}):
                delta = (
                    module.lora_B["default"].weight
                    @ module.lora_A["default"].weight
                    * module.scaling["default"]
                )
                module.lora_B["default"].weight.mul_(3e-5 / delta.abs().max())
    peft_model.save_pretrained(tmp_path / "adapter")

    tuned = load_generator(
        info.model_copy(update={"adapter": str(tmp_path / "adapter")}), device="cpu", dtype="bfloat16"
    )
    fresh, _, _ = load_model_and_processor(info, device="cpu", dtype="bfloat16")
    unmerged = PeftModel.from_pretrained(fresh, str(tmp_path / "adapter")).eval()
    merged_base, _, _ = load_model_and_processor(info, device="cpu", dtype="bfloat16")
    merged = PeftModel.from_pretrained(merged_base, str(tmp_path / "adapter")).merge_and_unload().eval()

    ps, ims = prompts(4), [[noise(i)] for i in range(4)]
    inputs = processor(
        text=[tuned.render(m) for m in ps],
        images=[i[0] for i in ims],
        padding=True,
        padding_side="left",
        return_tensors="pt",
    )
    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    with torch.inference_mode():
        logits = {
            name: model(**inputs).logits[:, -1].float()
            for name, model in (("harness", tuned.model), ("unmerged", unmerged), ("merged", merged))
        }
    assert torch.equal(logits["harness"], logits["unmerged"])
    assert not torch.equal(logits["merged"], logits["unmerged"])  # the merge really loses the deltas
    reference = load_generator(info, device="cpu", dtype="bfloat16")
    reference.model = unmerged
    assert tuned.generate(requests(ps, ims, 12)) == reference.generate(requests(ps, ims, 12))


@pytest.mark.parametrize(
    ("model_type", "why"), [("florence2", "encoder-decoder"), ("paligemma", "prefix-LM")]
)
def test_an_unsupported_family_is_refused_in_one_line(tmp_path, model_type, why):
    import json

    from typer.testing import CliRunner

    from harness.cli import app

    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    info = resolve(str(tmp_path))
    assert info.family == model_type
    with pytest.raises(HarnessError, match=f"is not supported: an? {why}"):
        load_generator(info, device="cpu")
    out = CliRunner().invoke(app, ["run", "--model", str(tmp_path), "--data", "synthetic", "--limit", "2"])
    assert out.exit_code == 2 and len(out.output.strip().splitlines()) == 1 and "not supported" in out.output


@pytest.mark.parametrize("name", ["tiny", "tiny-phi3v"])
def test_loader_takes_no_hub_kernels(name):
    """transformers >= 5.25 defaults to kernels downloaded from the hub at load time (an offline GPU
    load failed on it, and they are code outside the pinned revision): the one loader turns them off,
    on the Auto path and the native one."""
    model, _, _ = load_model_and_processor(resolve(name), device="cpu")
    assert model.use_kernels is False
