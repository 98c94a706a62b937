"""Phi3VProcessor with the REAL Phi-3-Vision tokenizer: token counts, HD crops, template, batching."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from backends.phi3v.processing import CLIP_MEAN, CLIP_STD, STOP_TOKEN_IDS, Phi3VProcessor
from conftest import phi3v_hub_files

HUB = phi3v_hub_files()
QUESTION = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown in this image?"}]}
]


@pytest.fixture(scope="module")
def proc() -> Phi3VProcessor:
    return Phi3VProcessor.from_pretrained(HUB)


def expected_tokens(h: int, w: int, per_crop: int = 144, side: int = 12) -> int:
    return (h * w + 1) * per_crop + 1 + (h + 1) * side


def norm(rgb) -> torch.Tensor:
    return (torch.tensor(rgb, dtype=torch.float) / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)


# (image size, num_crops) -> HD grid (rows, cols) of 336-px crops, worked out by hand from the spec.
CASES = [
    ((500, 500), 16, (4, 4)),  # square: 1344 x 1344 -> 2509 tokens
    ((500, 500), 4, (2, 2)),  # square, Phi-3.5 crops: 757 tokens
    ((640, 480), 16, (3, 4)),  # landscape 4:3 -> 1008 x 1344
    ((480, 640), 16, (4, 3)),  # portrait: transposed, then back
    ((640, 480), 4, (2, 2)),
    ((1000, 200), 16, (2, 8)),  # 2688 x 537, padded to 672
    ((1000, 200), 4, (1, 4)),
    ((300, 700), 16, (5, 3)),  # portrait with white side padding
]


@pytest.mark.parametrize("size,num_crops,grid", CASES)
def test_token_count_and_shapes_follow_the_formula(proc, size, num_crops, grid):
    p = Phi3VProcessor(proc.tokenizer, num_crops=num_crops)
    out = p(p.apply_chat_template(QUESTION), [Image.new("RGB", size, (200, 30, 30))])
    h, w = grid
    assert out["image_sizes"].tolist() == [[h * 336, w * 336]]
    assert out["pixel_values"].shape == (1, num_crops + 1, 3, 336, 336)
    assert int((out["input_ids"] < 0).sum()) == expected_tokens(h, w)
    # Unused crop slots are zero images.
    assert not out["pixel_values"][0, 1 + h * w :].any()
    assert out["pixel_values"][0, : 1 + h * w].abs().sum(dim=(1, 2, 3)).min() > 0


def test_known_totals_from_the_spec(proc):
    square = Image.new("RGB", (800, 800))
    assert int((proc("<|image_1|>", [square])["input_ids"] < 0).sum()) == 2509
    p4 = Phi3VProcessor(proc.tokenizer, num_crops=4)
    assert int((p4("<|image_1|>", [square])["input_ids"] < 0).sum()) == 757


def test_padding_is_white_and_portrait_pads_the_sides(proc):
    # 300 x 700 portrait -> HD 1008 x 1680 (W x H): 144 white columns each side, content in between.
    out = proc("<|image_1|>", [Image.new("RGB", (300, 700), (200, 30, 30))])
    first_crop = out["pixel_values"][0, 1]
    assert torch.allclose(first_crop[:, 10, 0], norm((255, 255, 255)), atol=1e-5)
    assert torch.allclose(first_crop[:, 10, 200], norm((200, 30, 30)), atol=1e-5)
    # Landscape 1000 x 200 -> 2688 x 537 padded to 672: rows on top are white.
    out = proc("<|image_1|>", [Image.new("RGB", (1000, 200), (10, 120, 240))])
    assert torch.allclose(out["pixel_values"][0, 1][:, 0, 100], norm((255, 255, 255)), atol=1e-5)
    assert torch.allclose(out["pixel_values"][0, 1][:, 300, 100], norm((10, 120, 240)), atol=1e-5)


def test_crops_are_row_major_and_global_view_is_the_whole_image(proc):
    # Left half red, right half blue, square -> 4 x 4 crops: crop columns 0-1 red, 2-3 blue.
    image = Image.new("RGB", (400, 400), (255, 0, 0))
    image.paste((0, 0, 255), (200, 0, 400, 400))
    crops = proc("<|image_1|>", [image])["pixel_values"][0]
    red, blue = norm((255, 0, 0)), norm((0, 0, 255))
    for row in range(4):
        for col in range(4):
            centre = crops[1 + row * 4 + col][:, 168, 168]
            assert torch.allclose(centre, red if col < 2 else blue, atol=1e-4)
    assert torch.allclose(crops[0][:, 168, 40], red, atol=1e-3)
    assert torch.allclose(crops[0][:, 168, 300], blue, atol=1e-3)


def test_global_view_equals_the_single_crop_at_num_crops_1(proc):
    p1 = Phi3VProcessor(proc.tokenizer, num_crops=1)
    image = Image.radial_gradient("L").convert("RGB").resize((400, 400))
    crops = p1("<|image_1|>", [image])["pixel_values"][0]
    assert crops.shape[0] == 2
    assert torch.equal(crops[0], crops[1])


def test_chat_template_renders_exactly(proc):
    text = proc.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    assert text == "<|user|>\n<|image_1|>What is shown in this image?<|end|>\n<|assistant|>\n"
    two = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "a"}, {"type": "image"}]}]
    assert proc.apply_chat_template(two) == "<|user|>\n<|image_1|>a<|image_2|><|end|>\n<|assistant|>\n"


def test_string_messages_render_like_the_official_template(proc):
    official = json.loads((HUB / "tokenizer_config.json").read_text())["chat_template"]
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Price?"},
    ]
    ours = proc.apply_chat_template(messages)
    theirs = proc.tokenizer.apply_chat_template(
        messages, chat_template=official, add_generation_prompt=True, tokenize=False
    )
    assert ours == theirs


def test_second_bos_follows_the_image_tokens(proc):
    out = proc(proc.apply_chat_template(QUESTION), [Image.new("RGB", (336, 336))])
    ids = out["input_ids"][0].tolist()
    n = expected_tokens(4, 4)  # a square image at num_crops 16 becomes 4 x 4 crops
    tok = proc.tokenizer
    head = tok("<|user|>\n").input_ids
    tail = tok("What is shown in this image?<|end|>\n<|assistant|>\n").input_ids
    assert head[:2] == [1, 32010] and tail[0] == 1
    assert ids == head + [-1] * n + tail
    assert tail[1:3] == tok.convert_tokens_to_ids(["▁What", "▁is"])


def test_batch_left_and_right_padding_and_image_order(proc):
    p4 = Phi3VProcessor(proc.tokenizer, num_crops=4)
    prompts = [
        "<|user|>\n<|image_1|>Short<|end|>\n",
        "<|user|>\n<|image_1|>A much longer question here<|end|>\n",
    ]
    images = [Image.new("RGB", (500, 500)), Image.new("RGB", (1000, 200))]  # 757 and 745 tokens
    left = p4(prompts, images)
    assert left["input_ids"].shape[0] == 2 and left["pixel_values"].shape == (2, 5, 3, 336, 336)
    assert left["image_sizes"].tolist() == [[672, 672], [336, 1344]]
    assert (left["input_ids"] < 0).sum(1).tolist() == [757, 745]
    singles = [p4(t, [im])["input_ids"][0] for t, im in zip(prompts, images, strict=True)]
    for row, mask, single in zip(left["input_ids"], left["attention_mask"], singles, strict=True):
        assert torch.equal(row[mask.bool()], single)
        assert (row[~mask.bool()] == 32000).all()
        assert mask[-1] == 1 and torch.equal(mask, mask.sort().values)  # left padding: pads first
    right = p4(prompts, images, padding_side="right")
    assert right["attention_mask"][:, 0].tolist() == [1, 1]
    assert torch.equal(right["input_ids"][0][right["attention_mask"][0].bool()], singles[0])


def test_multiple_images_in_one_prompt_get_their_own_ids(proc):
    p4 = Phi3VProcessor(proc.tokenizer, num_crops=4)
    out = p4("<|image_1|>and<|image_2|>", [Image.new("RGB", (500, 500)), Image.new("RGB", (1000, 200))])
    ids = out["input_ids"][0]
    assert int((ids == -1).sum()) == 757 and int((ids == -2).sum()) == 745
    assert out["pixel_values"].shape[0] == 2


def test_bad_input_is_a_clear_error(proc):
    image = Image.new("RGB", (50, 50))
    with pytest.raises(ValueError, match="images given"):
        proc("<|image_1|>", [image, image])
    with pytest.raises(ValueError, match="more image tags"):
        proc(["<|image_1|>", "<|image_1|>"], [image])
    with pytest.raises(ValueError, match="in order"):
        proc("<|image_2|>", [image])


def test_batch_decode_drops_image_ids_and_stop_tokens(proc):
    ids = torch.tensor([[-1, -1, 1, 22172, 32007, 32000]])
    assert proc.batch_decode(ids) == ["hello"]
    assert set(STOP_TOKEN_IDS) == {32007, 32000}
    assert proc.tokenizer.convert_ids_to_tokens(list(STOP_TOKEN_IDS)) == ["<|end|>", "<|endoftext|>"]


def test_save_and_load_round_trip(proc, tmp_path):
    p4 = Phi3VProcessor(proc.tokenizer, num_crops=4)
    p4.save_pretrained(tmp_path)
    again = Phi3VProcessor.from_pretrained(tmp_path)
    assert again.num_crops == 4 and again.crop_size == 336 and again.num_img_tokens == 144
    image = Image.new("RGB", (640, 480), (1, 2, 3))
    a, b = p4("<|image_1|>hi", [image]), again("<|image_1|>hi", [image])
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["pixel_values"], b["pixel_values"])
    assert Phi3VProcessor.from_pretrained(tmp_path, num_crops=16).num_crops == 16
    assert Phi3VProcessor.from_pretrained(HUB).num_crops == 16
