"""The training collator: images go through the processor, labels cover exactly the answer tokens."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from backends.hf import load_model_and_processor
from backends.trl import VisionSFTCollator, answer_frame, image_token_ids, lora_target_regex
from harness.models import resolve

MESSAGES = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown in this image?"}]}
]


TARGETS = [
    "Product: Cotton Shorts, Category: SKIRTS & TROUSERS, Full Price: 300.0",
    "Product: Nubuck Trek Boots, Category: BOOTS, Full Price: 1190.0",
    "Product: Cape, Category: PONCHOS & CAPES, Full Price: 4350.0",
]


@pytest.fixture(scope="module", params=["tiny", "tiny-phi3v"])
def loaded(request):
    model, processor, _ = load_model_and_processor(resolve(request.param), "cpu", load_adapter=False)
    return request.param, model, processor


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    root = tmp_path_factory.mktemp("collator-images")
    out = []
    for i, target in enumerate(TARGETS):
        path = root / f"{i}.png"
        Image.new("RGB", (48 + 16 * i, 40), (60 * i, 100, 200)).save(path)
        out.append({"messages": MESSAGES, "target": target, "image_path": str(path)})
    return out


def prompt_length(processor, feature) -> int:
    prompt = processor.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    with Image.open(feature["image_path"]) as img:
        return processor(text=[prompt], images=[img.convert("RGB")], return_tensors="pt")["input_ids"].shape[
            1
        ]


def test_labels_are_the_answer_and_nothing_else(loaded, features):
    name, model, processor = loaded
    tok = processor.tokenizer
    collator = VisionSFTCollator(processor, image_token_ids(model))
    batch = collator(features)
    assert batch["labels"].shape == batch["input_ids"].shape == batch["attention_mask"].shape
    assert "pixel_values" in batch and batch["pixel_values"].shape[0] == len(features)
    image_ids = image_token_ids(model)
    for row, feature in enumerate(features):
        ids, labels, mask = batch["input_ids"][row], batch["labels"][row], batch["attention_mask"][row]
        n_prompt, n = prompt_length(processor, feature), int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()  # right padding
        assert (labels[:n_prompt] == -100).all()  # the prompt, image slots included
        assert (labels[n:] == -100).all()  # the padding
        assert torch.equal(labels[n_prompt:n], ids[n_prompt:n])  # the answer, every token of it
        image_slots = (ids < 0) | torch.isin(ids, torch.tensor(sorted(image_ids) or [-1]))
        assert image_slots.sum() > 0 and (labels[image_slots] == -100).all()
        answer = tok.decode(labels[n_prompt:n], skip_special_tokens=False)
        _, end_text, end_ids = answer_frame(tok)
        assert answer.replace(" \n", "\n") == feature["target"] + end_text + tok.decode(end_ids)
        assert tok.decode(labels[n_prompt:n], skip_special_tokens=True).strip() == feature["target"]
        if name == "tiny-phi3v":  # the CookBook's target: answer<|end|>\n<|endoftext|>
            assert answer.endswith("<|end|>\n<|endoftext|>") or answer.endswith("<|end|> \n<|endoftext|>")


def test_labels_never_alias_input_ids(loaded, features):
    _, model, processor = loaded
    batch = VisionSFTCollator(processor, image_token_ids(model))(features)
    labels = batch["labels"].clone()
    assert batch["labels"].untyped_storage().data_ptr() != batch["input_ids"].untyped_storage().data_ptr()
    batch["input_ids"].clamp_(min=0)  # what the reference Phi-3-Vision model does to its input in place
    assert torch.equal(batch["labels"], labels)


def test_lora_targets_the_text_model_only(loaded):
    import re

    name, model, _ = loaded
    pattern = re.compile(lora_target_regex(model))
    hits = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and pattern.fullmatch(n)]
    expected = (
        ("qkv_proj", "o_proj", "gate_up_proj", "down_proj") if name == "tiny-phi3v" else ("q_proj", "v_proj")
    )
    assert hits and all(any(n.endswith(e) for n in hits) for e in expected)
    assert not [n for n in hits if "vision" in n or "img_" in n]  # CLIP's own q/k/v stay frozen


def test_end_of_turn_follows_the_chat_template(loaded):
    name, _, processor = loaded
    tok = processor.tokenizer
    prefix, text, ids = answer_frame(tok)
    assert prefix == ""
    assert text == "<|end|>\n"
    if name == "tiny-phi3v":
        assert ids == [tok.convert_tokens_to_ids("<|endoftext|>")]
    else:  # the tiny model's eos *is* <|end|>: no second end token
        assert ids == []


def test_a_template_that_takes_list_content_only_frames_the_answer_as_it_renders_it():
    """Real multimodal templates (SmolVLM's, LLaVA's) may index content as a list of parts and render
    nothing for a string: the frame is probed with list content first. SmolVLM's puts a space between
    'Assistant:' and the answer and ends the turn with '<end_of_utterance>\\n'."""
    from backends.families.smolvlm import SPECIAL
    from backends.tiny import train_tokenizer

    list_only = (
        "{{ '<|im_start|>' }}{% for message in messages %}{{ message['role'] | capitalize }}"
        "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
        "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
        "{{ '<end_of_utterance>' }}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
    )
    tok = train_tokenizer(
        ["Assistant: User: Q"],
        SPECIAL,
        chat_template=list_only,
        eos="<end_of_utterance>",
        pad="<|endoftext|>",
    )
    prefix, end, eos = answer_frame(tok)
    assert (prefix, end, eos) == (" ", "<end_of_utterance>\n", [])
