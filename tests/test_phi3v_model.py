"""Native Phi3VForCausalLM: official key names, HD embedding layout, batching, generation, LoRA, loading."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from backends.families import family_for_model_type, model_type_of_dir
from backends.phi3v import Phi3VConfig, Phi3VForCausalLM, build_tiny_phi3v, load
from backends.phi3v.modeling import Phi3VImageEmbedding
from backends.phi3v.tiny import TINY_CONFIG
from conftest import phi3v_hub_files

HUB = phi3v_hub_files()
INDEX_KEYS = set(json.loads((HUB / "model.safetensors.index.json").read_text())["weight_map"])


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_phi3v(tmp_path_factory.mktemp("phi3v") / "tiny-phi3v")


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load(tiny_dir, dtype=torch.float32, device="cpu")


def noise(w: int, h: int, seed: int) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy())


def prompt(processor, text: str) -> str:
    return processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    )


def test_official_key_names_with_the_real_config():
    config = Phi3VConfig.from_pretrained(HUB)
    with torch.device("meta"):  # the real 4.1B-parameter geometry, no memory
        model = Phi3VForCausalLM(config)
    assert set(model.state_dict()) == INDEX_KEYS
    assert sum(p.numel() for p in model.parameters()) * 2 == 8293242880  # the index's bf16 total_size


def test_saved_files_use_the_official_names(tiny_dir):
    with safe_open(tiny_dir / "model.safetensors", "pt") as f:
        saved = set(f.keys())

    def pattern(key: str) -> str:
        return re.sub(r"\.\d+\.", ".N.", key)

    assert {pattern(k) for k in saved} == {pattern(k) for k in INDEX_KEYS}


def test_su_rope_becomes_longrope():
    from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding

    official = json.loads((HUB / "config.json").read_text())["rope_scaling"]
    config = Phi3VConfig.from_pretrained(HUB)
    rope = config.rope_parameters
    assert rope["rope_type"] == "longrope" and "type" not in rope
    assert rope["short_factor"] == official["short_factor"] and rope["long_factor"] == official["long_factor"]
    assert config.vision_config.image_size == 336 and config.vision_config.patch_size == 14
    assert config._attn_implementation != "flash_attention_2"  # the hub file's setting is dropped
    assert Phi3RotaryEmbedding(config).attention_scaling == pytest.approx(1.19024, abs=1e-5)


def test_hd_layout_separators_and_merge_order():
    config = Phi3VConfig(**TINY_CONFIG)
    emb = Phi3VImageEmbedding(config).eval()
    emb.img_projection = nn.Identity()  # look at the 4*D-wide sequence before projection
    d = config.vision_config.hidden_size
    n_patch = (config.vision_config.image_size // config.vision_config.patch_size) ** 2

    def fake_penultimate(crops):
        """The penultimate CLIP layer of crop c, patch p (after CLS) holds the value 1000c + p."""
        n = crops.shape[0]
        marked = torch.arange(n)[:, None] * 1000.0 + torch.arange(-1, n_patch)[None]
        return marked[..., None].expand(n, n_patch + 1, d)

    emb.clip_penultimate = fake_penultimate
    with torch.no_grad():  # distinct separators (a bare module starts them at zero, as the official code)
        emb.sub_GN.fill_(-1.0)
        emb.glb_GN.fill_(-2.0)
    # One image of 2 x 1 crops (h=2, w=1) and 1 + 2 used crop slots out of 5.
    pixel_values = torch.zeros(1, 5, 3, 32, 32)
    seq = emb(pixel_values, torch.tensor([[64, 32]]))
    s = config.tokens_per_side  # 2
    h, w = 2, 1
    assert seq.shape[0] == (h * w + 1) * s * s + 1 + (h + 1) * s
    values = seq[:, ::d]  # the four concatenated patch values of each merged vector
    grid = 2 * s  # 4 patches per side
    # First sub-grid vector: crop 1, block (0, 0) -> patches (0,0),(0,1),(1,0),(1,1).
    assert values[0].tolist() == [1000 + 0, 1000 + 1, 1000 + grid, 1000 + grid + 1]
    sub_gn = emb.sub_GN.reshape(-1)
    glb_gn = emb.glb_GN.reshape(-1)
    row = w * s + 1
    for r in range(h * s):
        assert torch.equal(seq[r * row + w * s], sub_gn)
    # Row 2 of the sub-grid starts in crop 2 (crops are stacked top to bottom).
    assert values[2 * row].tolist()[0] == 2000
    glb_at = h * s * row
    assert torch.equal(seq[glb_at], glb_gn)
    assert int((seq == glb_gn).all(dim=1).sum()) == 1
    assert values[glb_at + 1].tolist()[0] == 0  # global view (crop 0) comes after glb_GN
    for r in range(s):
        assert torch.equal(seq[glb_at + 1 + r * (s + 1) + s], sub_gn)


def test_image_slots_get_projected_features_and_text_is_untouched(tiny):
    model, processor = tiny
    batch = processor([prompt(processor, "What?")], [noise(40, 30, 1)])
    ids = batch["input_ids"].clone()
    with torch.no_grad():
        embeds = model.model.embed(batch["input_ids"], batch["pixel_values"], batch["image_sizes"])
        feats = model.model.vision_embed_tokens(batch["pixel_values"], batch["image_sizes"])
        plain = model.model.embed_tokens(ids.clamp(min=0))
    slots = ids < 0
    assert torch.equal(batch["input_ids"], ids)  # not clamped in place
    assert torch.equal(embeds[slots], feats)
    assert torch.equal(embeds[~slots], plain[~slots])
    assert not torch.equal(embeds[slots], plain[slots])


def test_batched_generation_equals_one_by_one(tiny):
    model, processor = tiny
    texts = ["Name?", "What is the price of this item, exactly?", "Colour", "Describe the product in detail."]
    images = [noise(40, 30, 2), noise(30, 50, 3), noise(64, 64, 4), noise(90, 20, 5)]
    prompts = [prompt(processor, t) for t in texts]
    batch = processor(prompts, images)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=12, do_sample=False)
    batched = out[:, batch["input_ids"].shape[1] :].tolist()
    for i, (p, image) in enumerate(zip(prompts, images, strict=True)):
        one = processor(p, [image])
        with torch.no_grad():
            single = model.generate(**one, max_new_tokens=12, do_sample=False)[0, one["input_ids"].shape[1] :]
        assert batched[i][: len(single)] == single.tolist()


def test_outputs_depend_on_the_image(tiny):
    model, processor = tiny
    p = prompt(processor, "What is it?")
    with torch.no_grad():
        a = model(**processor(p, [noise(40, 40, 6)])).logits[0, -1]
        b = model(**processor(p, [noise(40, 40, 7)])).logits[0, -1]
        a2 = model(**processor(p, [noise(40, 40, 6)])).logits[0, -1]
    assert torch.equal(a, a2)
    assert (a - b).abs().max() > 1e-4


def test_negative_labels_are_ignored_by_the_loss(tiny):
    model, processor = tiny
    batch = processor([prompt(processor, "Hi")], [noise(32, 32, 8)])
    with torch.no_grad():
        raw = model(**batch, labels=batch["input_ids"].clone()).loss
        masked = model(**batch, labels=batch["input_ids"].masked_fill(batch["input_ids"] < 0, -100)).loss
    assert torch.isfinite(raw) and torch.equal(raw, masked)


def test_lora_step_with_gradient_checkpointing(tiny):
    from peft import LoraConfig, get_peft_model

    model, processor = tiny
    batch = processor(
        [prompt(processor, "Name?"), prompt(processor, "A longer question")], [noise(40, 30, 9)] * 2
    )
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    base = copy.deepcopy(model).train()
    targets = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    peft_model = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False)
    )
    n_lora = [n for n, _ in peft_model.named_parameters() if "lora_" in n]
    assert len(n_lora) == 2 * 4 * TINY_CONFIG["num_hidden_layers"]  # only the text model's projections
    losses, grads = [], []
    for checkpointing in (False, True):
        if checkpointing:
            peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        peft_model.zero_grad()
        loss = peft_model(**batch, labels=labels).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in peft_model.named_parameters() if p.requires_grad})
    assert base.model.gradient_checkpointing
    assert torch.allclose(losses[0], losses[1])
    assert set(grads[0]) == set(n_lora)
    for name in n_lora:
        assert grads[0][name].abs().sum() > 0
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6)


def test_tiny_build_is_deterministic_and_round_trips(tiny_dir, tiny, tmp_path):
    again = build_tiny_phi3v(tmp_path / "other")
    digest = [hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest() for d in (tiny_dir, again)]
    assert digest[0] == digest[1]
    assert family_for_model_type(model_type_of_dir(tiny_dir)).name == "phi3v"
    assert model_type_of_dir(tmp_path) is None
    model, processor = tiny
    assert model.config._attn_implementation == "sdpa"
    assert set(model.generation_config.eos_token_id) == {32007, 32000}
    assert processor.num_crops == 4 and processor.crop_size == 32
    model.save_pretrained(tmp_path / "saved")
    reloaded = Phi3VForCausalLM.from_pretrained(tmp_path / "saved")
    drop = {"_name_or_path"}
    assert {k: v for k, v in reloaded.config.to_dict().items() if k not in drop} == {
        k: v for k, v in model.config.to_dict().items() if k not in drop
    }
    ours, theirs = model.state_dict(), reloaded.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert (
        load_file(tmp_path / "saved" / "model.safetensors").keys()
        == load_file(tiny_dir / "model.safetensors").keys()
    )


def test_loads_an_official_layout_directory_without_remote_code(tiny_dir, tiny, tmp_path):
    """Official config.json (auto_map, "su", flash-attn setting, no vision_config but for the tiny size),
    sharded safetensors with an index, official preprocessor/tokenizer files."""
    from transformers import AutoModelForCausalLM

    config = json.loads((HUB / "config.json").read_text())
    for key in (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
    ):
        config[key] = TINY_CONFIG[key]
    config.update(vision_config=TINY_CONFIG["vision_config"], img_processor=TINY_CONFIG["img_processor"])
    config["rope_scaling"] = {**config["rope_scaling"], **TINY_CONFIG["rope_scaling"]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(HUB / name, tmp_path / name)
    pre = json.loads((HUB / "preprocessor_config.json").read_text())
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps({**pre, "num_crops": 4, "num_img_tokens": 4})
    )
    weights = load_file(tiny_dir / "model.safetensors")
    keys = sorted(weights)
    weight_map = {}
    for i, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2 :]), start=1):
        name = f"model-0000{i}-of-00002.safetensors"
        save_file({k: weights[k] for k in part}, tmp_path / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )

    model, processor = load(tmp_path, dtype=torch.float32)  # raises on missing/unexpected keys
    assert processor.crop_size == 32 and processor.num_crops == 4
    auto = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    assert isinstance(auto, Phi3VForCausalLM)
    reference, reference_processor = tiny
    batch = processor(prompt(processor, "Hi"), [noise(50, 30, 10)])
    assert torch.equal(
        batch["input_ids"], reference_processor(prompt(processor, "Hi"), [noise(50, 30, 10)])["input_ids"]
    )
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, reference(**batch).logits)
        assert torch.equal(auto(**batch).logits, reference(**batch).logits)


def test_generation_across_the_longrope_switch_keeps_the_image(tiny):
    """Past 4096 tokens Phi-3 drops the KV cache and recomputes with the long factors: the image
    features must go in again. Cached greedy decoding must equal uncached decoding."""
    model, processor = tiny
    text = "word " * 4056
    batch = processor(prompt(processor, text), [noise(40, 30, 11)])
    start = batch["input_ids"].shape[1]
    assert start < 4096 < start + 8
    with torch.no_grad():
        cached = model.generate(**batch, max_new_tokens=8, do_sample=False, min_new_tokens=8)
        uncached = model.generate(
            **batch, max_new_tokens=8, do_sample=False, min_new_tokens=8, use_cache=False
        )
    assert torch.equal(cached, uncached)


def test_plain_forward_with_left_padding_matches_unpadded(tiny):
    model, processor = tiny
    prompts = [prompt(processor, "Hi"), prompt(processor, "A much longer question about the product")]
    images = [noise(40, 30, 12), noise(30, 60, 13)]
    batch = processor(prompts, images)
    with torch.no_grad():
        batched = model(**batch).logits[:, -1]
        for i in range(2):
            single = model(**processor(prompts[i], [images[i]])).logits[0, -1]
            assert torch.allclose(batched[i], single, atol=1e-5)


def test_vision_config_defaults_to_vit_l_336_and_merges_overrides():
    config = Phi3VConfig()
    assert (config.vision_config.hidden_size, config.vision_config.num_hidden_layers) == (1024, 24)
    assert config.tokens_per_side == 12
    small = Phi3VConfig(vision_config={"image_size": 224})
    assert small.vision_config.patch_size == 14 and small.tokens_per_side == 8
    with pytest.raises(ValueError, match="even"):
        Phi3VConfig(vision_config={"image_size": 42})


def fresh_model(tiny_dir, attn: str = "sdpa") -> Phi3VForCausalLM:
    """An unshared model: output-capture hooks are per-instance state, the module fixture must stay clean."""
    model = Phi3VForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32, attn_implementation=attn)
    assert model.model.vision_embed_tokens.img_processor.vision_model.config._attn_implementation == attn
    return model.eval()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_image_features_survive_output_hidden_states_and_attentions(tiny_dir, tiny, attn):
    """transformers 5 installs the output-capture hooks on the CLIP tower again after a whole-model
    forward with output_hidden_states/output_attentions; hidden_states[-2] then was the last layer."""
    model = fresh_model(tiny_dir, attn)
    processor = tiny[1]
    batch = processor(prompt(processor, "What is it?"), [noise(60, 40, 14)])
    crops = batch["pixel_values"][0, :3]  # global + 2 x 1 sub-crops
    emb = model.model.vision_embed_tokens
    flags = [{"output_hidden_states": True}] + ([{"output_attentions": True}] if attn == "eager" else [])
    runs = []
    with torch.no_grad():
        for extra in [{}, *flags]:
            if extra:
                out = model(**batch, **extra)
                assert out.hidden_states or out.attentions
            runs.append((emb.crop_features(crops), emb(batch["pixel_values"], batch["image_sizes"])))
            runs[-1] += (model(**batch).logits[0, -1],)
    assert len(runs) == 1 + len(flags)
    for later in runs[1:]:
        for a, b in zip(runs[0], later, strict=True):
            assert torch.equal(a, b)


def test_crop_features_are_the_clean_penultimate_clip_layer(tiny_dir):
    """The directly computed layer equals hidden_states[-2] (no CLS) of a fresh tower's own forward."""
    model = fresh_model(tiny_dir)
    emb = model.model.vision_embed_tokens
    tower = emb.img_processor.vision_model
    n_layers = tower.config.num_hidden_layers
    crops = torch.randn(3, 3, emb.crop_size, emb.crop_size, generator=torch.Generator().manual_seed(15))
    with torch.no_grad():
        out = emb.img_processor(crops, output_hidden_states=True)  # before any hook could be doubled
        assert len(out.hidden_states) == n_layers + 1
        reference = out.hidden_states[-2]
        assert not torch.allclose(reference, out.hidden_states[-1])
        penultimate = emb.clip_penultimate(crops)
        feats = emb.crop_features(crops)
    assert torch.equal(penultimate, reference)
    n, _, d = reference.shape
    s = emb.side
    merged = reference[:, 1:].reshape(n, s, 2, s, 2, d).permute(0, 1, 3, 2, 4, 5).reshape(n, s, s, 4 * d)
    assert torch.equal(feats, merged)


def test_clip_last_layer_is_skipped_but_kept_and_vision_layers_checkpoint(tiny_dir):
    model = fresh_model(tiny_dir).train()
    emb = model.model.vision_embed_tokens
    layers = emb.img_processor.vision_model.encoder.layers
    last = f"model.vision_embed_tokens.img_processor.vision_model.encoder.layers.{len(layers) - 1}."
    assert any(k.startswith(last) for k in model.state_dict())  # still a checkpoint key
    calls = [0] * len(layers)
    for i, layer in enumerate(layers):
        # On a submodule: a checkpointed layer's own hooks stay outside the checkpoint, its MLP's rerun.
        layer.mlp.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    crops = torch.randn(2, 3, emb.crop_size, emb.crop_size, generator=torch.Generator().manual_seed(16))
    counts, grads = [], []
    for checkpointing in (False, True):
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            assert all(layer.gradient_checkpointing for layer in layers)
        model.zero_grad()
        calls[:] = [0] * len(layers)
        emb.crop_features(crops).square().sum().backward()
        counts.append(list(calls))
        grads.append(layers[0].self_attn.q_proj.weight.grad.clone())
    assert grads[0].abs().sum() > 0 and torch.allclose(grads[0], grads[1], atol=1e-6)
    assert counts == [[1] * (len(layers) - 1) + [0], [2] * (len(layers) - 1) + [0]]  # recomputed in backward
