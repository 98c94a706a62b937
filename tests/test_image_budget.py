"""--max-image-tokens: the tokens an image becomes are measured through the processor, capped through
the family's own setting, and recorded in the run's identity."""

from __future__ import annotations

import pytest
from PIL import Image

from backends.chat import apply_image_budget, count_image_tokens, most_image_tokens
from backends.families import get_family
from backends.hf import load_model_and_processor
from harness.core.errors import HarnessError
from harness.models import resolve

PHOTO = Image.new("RGB", (1600, 1200), "white")


def _processor(name: str):
    _, processor, _ = load_model_and_processor(resolve(name), device="cpu")
    return processor


def test_phi3v_cap_lowers_num_crops_until_an_image_fits():
    processor = _processor("tiny-phi3v")
    before = count_image_tokens(processor, PHOTO)
    crops = processor.num_crops
    setting = apply_image_budget(get_family("phi3v"), processor, before - 1)
    after = count_image_tokens(processor, PHOTO)
    assert setting == f"num_crops {processor.num_crops}" and processor.num_crops < crops
    assert after < before and most_image_tokens(processor) <= before - 1


def test_a_cap_the_published_setting_meets_changes_nothing():
    processor = _processor("tiny-phi3v")
    crops = processor.num_crops
    assert apply_image_budget(get_family("phi3v"), processor, 100_000) is None
    assert processor.num_crops == crops


def test_smolvlm_cap_shrinks_its_tile_grid():
    processor = _processor("tiny-smolvlm")
    before = most_image_tokens(processor)
    setting = apply_image_budget(get_family("smolvlm"), processor, before - 1)
    assert setting and most_image_tokens(processor) < before


def test_a_cap_below_a_fixed_count_stops_in_one_line():
    processor = _processor("tiny-gemma3")
    fixed = most_image_tokens(processor)
    with pytest.raises(HarnessError, match=f"makes an image {fixed} tokens and has no setting"):
        apply_image_budget(get_family("gemma3"), processor, fixed - 1)


def test_the_cap_is_part_of_the_run_identity_and_shortens_every_prompt(tmp_path):
    from harness.api import evaluate

    common = {"data": "synthetic", "limit": 2, "output_dir": str(tmp_path), "device": "cpu", "quiet": True}
    plain = evaluate("burberry", "tiny-phi3v", **common)
    capped = evaluate("burberry", "tiny-phi3v", **common, max_image_tokens=20)
    assert plain.path != capped.path and capped.config.model.max_image_tokens == 20
    assert plain.config.model.max_image_tokens is None
    by_id = {r.id: r.prompt_tokens for r in plain.records}
    assert all(r.prompt_tokens < by_id[r.id] for r in capped.records)


@pytest.mark.families  # their processors' video half needs torchvision
@pytest.mark.parametrize(
    ("family", "model"),
    [("qwen2_5_vl", "tiny-qwen2.5-vl"), ("qwen3_vl", "tiny-qwen3-vl"), ("internvl", "tiny-internvl")],
)
def test_resizing_and_tiling_families_meet_the_cap(family, model):
    processor = _processor(model)
    before = most_image_tokens(processor)
    cap = max(1, before // 2)
    assert apply_image_budget(get_family(family), processor, cap)
    assert most_image_tokens(processor) <= cap < before


def test_task_check_shows_image_tokens_per_sample_before_a_run():
    import re

    from typer.testing import CliRunner

    from harness.cli import app

    def tokens(*extra: str) -> list[int]:
        args = [
            "task",
            "check",
            "burberry",
            "--data",
            "synthetic",
            "--rows",
            "2",
            "--model",
            "tiny-phi3v",
            *extra,
        ]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "GB KV cache" in result.output
        return [int(n) for n in re.findall(r"-> (\d+) image tokens", result.output)]

    published, capped = tokens(), tokens("--max-image-tokens", "20")
    assert len(published) == 2 and all(c < p and c <= 20 for c, p in zip(capped, published, strict=True))
