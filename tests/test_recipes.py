"""Multi-GPU recipes, config-checked here (no GPU needed), and the `--dry-run` plan's numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from accelerate.commands.config.config_args import load_config_from_file
from typer.testing import CliRunner

from backends.phi3v import Phi3VConfig, Phi3VForCausalLM
from conftest import phi3v_hub_files
from harness.cli import app
from harness.models import resolve
from harness.plan import plan

LAUNCH = Path(__file__).resolve().parents[1] / "backends" / "trl" / "launch"
HUB = phi3v_hub_files()


@pytest.mark.parametrize(
    ("name", "kind"),
    [("ddp.yaml", "MULTI_GPU"), ("fsdp.yaml", "FSDP"), ("deepspeed_zero2.yaml", "DEEPSPEED"), ("deepspeed_zero3.yaml", "DEEPSPEED")],
)  # fmt: skip
def test_launch_configs_load_as_accelerate_reads_them(name, kind):
    config = load_config_from_file(str(LAUNCH / name))
    assert config.distributed_type.name == kind and config.mixed_precision == "bf16"
    if kind == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] == int(name[-6])
        assert config.deepspeed_config["zero3_init_flag"] == (name.endswith("3.yaml"))


def test_fsdp_wraps_exactly_the_layers_phi3_vision_has():
    config = load_config_from_file(str(LAUNCH / "fsdp.yaml")).fsdp_config
    wrapped = set(config["fsdp_transformer_layer_cls_to_wrap"].split(","))
    assert wrapped == set(Phi3VForCausalLM._no_split_modules)
    official = json.loads((HUB / "config.json").read_text())
    with torch.device("meta"):
        model = Phi3VForCausalLM(Phi3VConfig(**{k: v for k, v in official.items() if k != "auto_map"}))
    classes = {type(m).__name__ for m in model.modules()}
    assert wrapped <= classes  # 32 decoder layers and 24 CLIP layers become shard units
    assert config["fsdp_use_orig_params"] is True  # LoRA: frozen and trainable weights in one unit


def test_plan_counts_exactly_the_published_checkpoint():
    result = plan(resolve("phi-3-vision", build=False), lora_r=64, projector=False, vision=False)
    published = json.loads((HUB / "model.safetensors.index.json").read_text())["metadata"]["total_size"]
    assert result.total == published // 2  # bf16: two bytes a parameter
    per_layer = 64 * ((3072 + 9216) + (3072 + 3072) + (3072 + 16384) + (8192 + 3072))  # qkv, o, gate_up, down
    assert result.trainable == 32 * per_layer
    ddp, fsdp = result.memory("ddp", 8, 1), result.memory("fsdp", 8, 1)
    assert fsdp["weights"] == pytest.approx(ddp["weights"] / 8) and fsdp["total"] < ddp["total"]
    assert result.memory("zero2", 8, 1)["trainable states"] < ddp["trainable states"]


def test_plan_lora_count_equals_what_peft_trains():
    from peft import LoraConfig, get_peft_model

    from backends.hf import load_model_and_processor
    from backends.trl import lora_target_regex

    info = resolve("tiny-phi3v")
    result = plan(info, lora_r=8, projector=True, vision=True)
    model, _, _ = load_model_and_processor(info, "cpu", load_adapter=False)
    target = lora_target_regex(model, projector=True, vision=True)
    peft_model = get_peft_model(model, LoraConfig(r=8, target_modules=target))
    lora = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    assert result.trainable == lora


def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(app, ["train", "--model", "phi-3-vision", "--dry-run", "--processes", "8"])
    assert out.exit_code == 0, out.output
    assert "4.15B parameters" in out.output and "100.7M trainable" in out.output
    for strategy in ("ddp", "fsdp", "zero2", "zero3"):
        assert f"\n{strategy} " in out.output
    assert not (tmp_path / "outputs").exists()
