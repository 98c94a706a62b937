"""Every VLM family a catalog team would try, each proven on a tiny random model of its own
architecture, built offline from the family's own transformers config class and loaded back
through the code path a hub checkpoint takes.

For each family: the image reaches the model, batch 8 answers exactly as one at a time (left
padding; Qwen's M-RoPE, Gemma 3's image attention), the family's stop token ends an answer, a
few-shot conversation with several images runs, the collator supervises the answer tokens of the
family's template and nothing else, LoRA reaches the text model only; and run -> train -> run ->
report on the synthetic catalog, a short LoRA lowering the loss and raising the parse rate, the
adapter evaluated unmerged, the merged export loading with transformers alone and answering alike.

A new family is one module in backends/families plus one entry in FAMILIES.
Runs in the `families` tox environment (torchvision installed, as on a GPU machine: several
families' processors carry a video half that needs it).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from backends.families import get_family
from backends.hf import HFGenerator, load_model_and_processor
from backends.trl import VisionSFTCollator, image_token_ids, lora_target_regex
from conftest import requests
from harness.models import resolve
from tasks import get_task

pytestmark = pytest.mark.families

# family -> its tiny model's name
FAMILIES = {
    "llava": "tiny",
    "phi3v": "tiny-phi3v",
    "qwen2_5_vl": "tiny-qwen2.5-vl",
    "qwen3_vl": "tiny-qwen3-vl",
    "gemma3": "tiny-gemma3",
    "smolvlm": "tiny-smolvlm",
    "llava_onevision": "tiny-llava-onevision",
    "llava_next": "tiny-llava-next",
    "internvl": "tiny-internvl",
}
QUESTION = "What is shown in this image?"


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    """(family, model info, model, processor, generator) of the family's tiny model, fp32 on the CPU."""
    info = resolve(FAMILIES[request.param])
    model, processor, device = load_model_and_processor(info, "cpu")
    return get_family(request.param), info, model, processor, HFGenerator(model, processor, device)


def noise(seed: int, width: int = 48, height: int = 40) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def asking(texts: list[str]) -> list[list[dict]]:
    return [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": t}]}] for t in texts]


def test_built_from_its_own_config_and_loaded_as_a_checkpoint_is(family):
    fam, info, model, processor, _ = family
    assert info.family == fam.name and model.config.model_type in fam.model_types
    assert type(model).__name__.endswith(("ForConditionalGeneration", "ForCausalLM"))
    if fam.load is None:  # transformers' own classes: the Auto path any hub checkpoint of it takes
        from transformers import AutoModelForImageTextToText, AutoProcessor

        again = AutoModelForImageTextToText.from_pretrained(info.path)
        assert type(again) is type(model) and type(AutoProcessor.from_pretrained(info.path)) is type(
            processor
        )
    assert processor.tokenizer.chat_template or getattr(processor, "chat_template", None)


def test_the_image_reaches_the_model(family):
    *_, generator = family
    prompts = asking([QUESTION] * 6)
    flat = [[Image.new("RGB", (48, 40), (40 * i, 255 - 40 * i, 128))] for i in range(6)]
    noisy = [[noise(100 + i)] for i in range(6)]
    assert generator.generate(requests(prompts, flat, 12)) != generator.generate(requests(prompts, noisy, 12))


def test_a_batch_of_8_answers_exactly_as_one_at_a_time(family):
    *_, generator = family
    # Different prompt lengths and image sizes: left padding and per-image token counts differ in a batch.
    prompts = asking([QUESTION + " Answer briefly." * (i % 4) for i in range(8)])
    images = [[noise(i, 32 + 8 * (i % 3), 40 + 8 * (i % 2))] for i in range(8)]
    batched = generator.generate(requests(prompts, images, 16))
    alone = [generator.generate(requests([p], [im], 16))[0] for p, im in zip(prompts, images, strict=True)]
    assert batched == alone
    assert len({a.text for a in alone}) > 1  # not one constant answer


def test_the_familys_stop_tokens_end_an_answer(family):
    fam, _, _, processor, generator = family
    vocab = processor.tokenizer.get_vocab()
    assert {vocab[t] for t in fam.stop_tokens if t in vocab} <= set(generator.stop_ids)
    first = generator.generate(requests(asking([QUESTION]), [[noise(7)]], 6))[0]
    assert (first.stop, first.n_tokens) == ("length", 6)  # random weights: no end token in 6
    generator.stop_ids, saved = list(range(len(processor.tokenizer))), generator.stop_ids  # any token ends it
    try:
        ended = generator.generate(requests(asking([QUESTION]), [[noise(7)]], 6))[0]
    finally:
        generator.stop_ids = saved
    assert (ended.stop, ended.n_tokens) == ("end", 1)


def test_a_few_shot_conversation_with_three_images_runs(family, tmp_path):
    *_, generator = family
    task = get_task("burberry", prompt="few-shot")
    sample = task.load("synthetic", "test", limit=1).samples[0]
    messages = task.messages(sample)
    paths = [
        p["path"]
        for m in messages
        if isinstance(m["content"], list)
        for p in m["content"]
        if p["type"] == "image"
    ]
    assert len(paths) == 3  # two solved examples, then the sample
    images = [Image.open(p).convert("RGB") for p in paths]
    (answer,) = generator.generate(requests([messages], [images], 8))
    assert answer.n_tokens > 0 and answer.prompt_tokens > 0


def test_the_collator_supervises_the_answer_tokens_and_nothing_else(family, tmp_path):
    _, _, model, processor, _ = family
    targets = ["Product: Cotton Shorts, Category: SKIRTS & TROUSERS, Full Price: 300.0", "Product: Cape, Category: PONCHOS & CAPES, Full Price: 4350.0"]  # fmt: skip
    features = []
    for i, target in enumerate(targets):
        path = tmp_path / f"{i}.png"
        noise(i, 48 + 16 * i, 40).save(path)
        features.append({"messages": asking([QUESTION])[0], "target": target, "image_path": str(path)})
    collator = VisionSFTCollator(processor, image_token_ids(model))
    batch = collator(features)
    for row, feature in enumerate(features):
        labels, ids = batch["labels"][row], batch["input_ids"][row]
        supervised = labels[labels != -100].tolist()
        assert supervised == collator.answer_ids(feature["target"])  # token by token, the answer only
        n = int(batch["attention_mask"][row].sum())
        start = n - len(supervised)
        assert (
            ids[start:n].tolist() == supervised
            and (labels[:start] == -100).all()
            and (labels[n:] == -100).all()
        )
        image_slots = (ids < 0) | torch.isin(ids, torch.tensor(sorted(image_token_ids(model)) or [-1]))
        assert image_slots[:start].sum() > 0 and (labels[image_slots] == -100).all()
        decoded = processor.tokenizer.decode(supervised, skip_special_tokens=True)
        assert decoded.strip() == feature["target"]
    with torch.no_grad():
        loss = model(**batch).loss
    assert torch.isfinite(loss)


def test_lora_reaches_the_text_model_and_only_with_the_recipe_the_image_path(family):
    fam, _, model, _, _ = family
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    text = re.compile(lora_target_regex(model))
    hits = [n for n in linears if text.fullmatch(n)]
    assert hits and not [n for n in hits if set(n.split(".")) & set(fam.image_modules)]
    everything = re.compile(lora_target_regex(model, projector=True, vision=True))
    image_hits = [
        n for n in linears if everything.fullmatch(n) and set(n.split(".")) & set(fam.image_modules)
    ]
    assert bool(image_hits) == bool(fam.lora_vision or fam.lora_projector)


# Phi-3-Vision's whole job (its tiny model has the real 32k-token Phi-3 tokenizer and needs a longer
# fine-tune) is `harness demo`'s, checked by tests/test_demo.py.
END_TO_END = [name for name in FAMILIES if name != "phi3v"]


def test_the_4bit_skip_list_covers_the_whole_image_path(family):
    """QLoRA keeps the image path and the head out of 4-bit: every Linear outside the text model's
    LoRA targets lies under a module the family keeps out (none is quantised by mistake)."""
    fam, _, model, _, _ = family
    text = re.compile(lora_target_regex(model))
    for kept in fam.not_quantized:
        assert any(kept in n.split(".") for n, _ in model.named_modules()), kept
    outside = [
        n for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and not text.fullmatch(n) and not set(n.split(".")) & set(fam.not_quantized)
    ]  # fmt: skip
    assert outside == []


@pytest.mark.slow
@pytest.mark.parametrize("name", END_TO_END)
def test_run_train_run_report(name, tmp_path, monkeypatch):
    """The whole job on the family's tiny model: a short LoRA lowers the loss and raises the parse
    rate on the test split; the adapter is evaluated unmerged; the merged export loads with
    transformers alone (or the family's own loader) and answers as the unmerged adapter does."""
    import harness
    from harness.export import export

    monkeypatch.chdir(tmp_path)
    model = FAMILIES[name]
    kw = {"data": "synthetic", "limit": 24, "batch_size": 8, "output_dir": tmp_path / "runs", "quiet": True}
    base = harness.evaluate("burberry", model, **kw)
    tuned = harness.train(model, "burberry", data="synthetic", max_steps=80, n_eval=8, eval_every=80,
                          output_dir=tmp_path / "adapter", quiet=True)  # fmt: skip
    assert tuned.losses[-1][1] < tuned.losses[0][1], tuned.losses
    after = harness.evaluate("burberry", str(tuned.output_dir), **kw)
    assert after.config.model.adapter == str(tuned.output_dir.resolve())  # unmerged, on its base
    parsed = after.metrics.metrics["parsed"].value
    assert parsed >= base.metrics.metrics["parsed"].value + 0.5, (base.metrics.metrics["parsed"], parsed)
    report = harness.compare(base, after).to_markdown(tmp_path / "report.md")
    assert "parse rate" in report.read_text()

    merged = export(str(tuned.output_dir), tmp_path / "merged", merge=True)
    family = get_family(resolve(model).family)
    if family.load is None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        net, processor = AutoModelForImageTextToText.from_pretrained(merged).eval(), AutoProcessor.from_pretrained(merged)  # fmt: skip
    else:
        net, processor = family.load(merged)
    unmerged, unmerged_processor, _ = load_model_and_processor(resolve(str(tuned.output_dir)), "cpu")
    task = get_task("burberry")
    samples = task.load("synthetic", "test", limit=6).samples
    asked = requests(
        [task.messages(s) for s in samples], [[Image.open(s.image).convert("RGB")] for s in samples], 24
    )
    expected = HFGenerator(unmerged, unmerged_processor, "cpu").generate(asked)
    assert HFGenerator(net, processor, "cpu").generate(asked) == expected
