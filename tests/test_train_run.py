"""Training mechanics on the tiny model: the image reaches the loss, resume, W&B offline, no leaks."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import TrainerCallback

from backends.hf import HFGenerator, load_model_and_processor
from backends.trl import Example, TrainParams, VisionSFTCollator, image_token_ids, train
from conftest import requests
from harness.core.errors import HarnessError
from harness.core.leakage import check_disjoint
from harness.core.schema import Sample
from harness.models import resolve
from harness.training import _newest_unfinished

MESSAGES = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown in this image?"}]}
]


COLOURS = {"BOOTS": (200, 30, 30), "COATS": (30, 200, 30), "BAGS": (30, 30, 200)}


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> list[Example]:
    root = tmp_path_factory.mktemp("train-images")
    out = []
    for i in range(24):
        category = list(COLOURS)[i % 3]
        path = root / f"{i}.png"
        Image.new("RGB", (32, 32), COLOURS[category]).save(path)
        out.append(
            Example(
                str(i), MESSAGES, f"Product: Item {i % 3}, Category: {category}, Full Price: 100.0", str(path)
            )
        )
    return out


def fresh_tiny():
    model, processor, _ = load_model_and_processor(resolve("tiny"), "cpu", load_adapter=False)
    return model, processor


def small_params(**kw) -> TrainParams:
    base = dict(
        lr=3e-3,
        batch_size=4,
        grad_accum=1,
        lora_r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        warmup_steps=0,
        bf16=False,
        gradient_checkpointing=False,
        modules_to_save=["lm_head", "embed_tokens"],
        save_steps=2,
        logging_steps=1,
        eval_every=0,
        n_eval=4,
    )
    return TrainParams(**{**base, **kw})


def category_judge(processor, examples: list[Example]):
    """A task-free ``evaluate(model)``: the example's category (every third id shares one) appears in
    the answer the model generates now."""
    categories = list(COLOURS)

    def evaluate(model):
        gen = HFGenerator(model, processor, "cpu")
        images = [[Image.open(e.image).convert("RGB")] for e in examples]
        outputs = [a.text for a in gen.generate(requests([e.messages for e in examples], images, 16))]
        hits = [categories[int(e.id) % 3] in out for e, out in zip(examples, outputs, strict=True)]
        rows = [(e.id, e.image, e.target, out) for e, out in zip(examples, outputs, strict=True)]
        return {"category_exact": sum(hits) / max(len(hits), 1)}, rows

    return evaluate


class StopAfter(TrainerCallback):
    """Stops training cleanly after a given step: an interruption, as a test can make one."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
        return control


def test_the_image_changes_the_loss(examples):
    model, processor = fresh_tiny()
    batch = VisionSFTCollator(processor, image_token_ids(model))(
        [{"messages": e.messages, "target": e.target, "image_path": e.image} for e in examples[:3]]
    )
    with torch.no_grad():
        loss = model(**batch).loss
        other = dict(
            batch, pixel_values=batch["pixel_values"].flip(0)
        )  # each answer paired with another image
        assert not torch.isclose(model(**other).loss, loss)


def adapter_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def test_interrupted_run_resumes_to_the_same_end(examples, tmp_path):
    model, processor = fresh_tiny()
    params = small_params(max_steps=4)
    stopped = train(
        model,
        processor,
        examples,
        [],
        output_dir=tmp_path / "a",
        evaluate=category_judge(processor, examples[:4]),
        params=params,
        callbacks=[StopAfter(2)],
    )
    assert stopped.steps == 2 and (tmp_path / "a" / "checkpoint-2").is_dir()
    model, processor = fresh_tiny()
    resumed = train(
        model,
        processor,
        examples,
        [],
        output_dir=tmp_path / "a",
        evaluate=category_judge(processor, examples[:4]),
        params=params,
        resume=True,
    )
    assert resumed.steps == 4
    model, processor = fresh_tiny()
    straight = train(
        model,
        processor,
        examples,
        [],
        output_dir=tmp_path / "b",
        evaluate=category_judge(processor, examples[:4]),
        params=params,
    )
    assert straight.steps == 4
    a, b = adapter_weights(tmp_path / "a"), adapter_weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for key in a:  # same data order, same RNG: resuming changes nothing
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


def test_resume_without_checkpoint_is_a_clear_error(examples, tmp_path):
    model, processor = fresh_tiny()
    with pytest.raises(HarnessError, match="no checkpoint"):
        train(
            model,
            processor,
            examples,
            [],
            output_dir=tmp_path,
            evaluate=category_judge(processor, examples[:4]),
            params=small_params(max_steps=1),
            resume=True,
        )


def read_wandb_records(path: Path):
    """Records of an offline run file (LevelDB log framing: 32 KiB blocks, 7-byte record headers)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, chunk, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the tail of a block too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
        elif kind == 0:
            break
    return records


def _wandb_contents(run_file: Path):
    """(history keys, config keys, logged tables) of an offline run file, as far as it is written."""
    history, config, tables = set(), set(), []
    try:
        records = read_wandb_records(run_file)
    except (AssertionError, ValueError):  # not written yet
        return history, config, tables
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history |= {item.key or "/".join(item.nested_key) for item in record.history.item}
        elif kind in ("config", "run"):  # wandb.init's config rides on the run record
            update = record.config.update if kind == "config" else record.run.config.update
            config |= {item.key for item in update}
        elif kind == "artifact" and record.artifact.type == "run_table":  # a logged table and its media
            tables.append([c.path for c in record.artifact.manifest.contents])
    return history, config, tables


def test_wandb_offline_run_has_config_metrics_and_table(examples, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    model, processor = fresh_tiny()
    result = train(
        model,
        processor,
        examples,
        examples[:4],
        output_dir=tmp_path / "run",
        evaluate=category_judge(processor, examples[:4]),
        params=small_params(max_steps=2, eval_every=1),
        report_to="wandb",
        run_config={"task": "demo"},
    )
    import os

    assert os.environ["WANDB_MODE"] == "offline"  # no key and no mode: offline, to sync later
    assert result.wandb_dir and set(result.metrics) == {"category_exact"}
    (run_file,) = Path(result.wandb_dir).glob("run-*.wandb")
    for _ in range(40):  # wandb's service process may still be flushing the file after finish()
        history, config, tables = _wandb_contents(run_file)
        if config and history and tables:
            break
        time.sleep(0.25)
    assert {"harness", "params", "learning_rate", "peft_config"} <= config, sorted(
        config
    )  # ours, Trainer's, peft's
    assert {"train/loss", "eval/category_exact", "eval/samples/_type"} <= history, sorted(history)
    assert any("eval/samples.table.json" in p and any(f.endswith(".png") for f in p) for p in tables), tables


def test_leaks_are_refused():
    def sample(i: str, group: str) -> Sample:
        return Sample(id=i, image="x.png", truth={"name": "n"}, group=group)

    check_disjoint([sample("1", "a"), sample("2", "b")], [sample("3", "c")], "test")
    with pytest.raises(HarnessError, match="data leak: 1 ids and 0 product groups"):
        check_disjoint([sample("1", "a")], [sample("1", "z")], "test")
    with pytest.raises(HarnessError, match="data leak: 0 ids and 1 product groups"):  # another colour
        check_disjoint([sample("1", "a"), sample("2", "c")], [sample("3", "c")], "test")


def test_resume_picks_the_newest_unfinished_run(tmp_path):
    for name, finished in [
        ("tiny-20250101-000000", False),
        ("tiny-20250102-000000", False),
        ("tiny-20250103-000000", True),
    ]:
        (tmp_path / name / "checkpoint-2").mkdir(parents=True)
        if finished:
            (tmp_path / name / "harness-train.json").write_text("{}")
    (tmp_path / "tiny-20250104-000000").mkdir()  # started, no checkpoint yet: nothing to resume
    # Another base whose name starts the same, and a hand-named directory: neither is a "tiny" run.
    (tmp_path / "tiny-phi3v-20250105-000000" / "checkpoint-2").mkdir(parents=True)
    (tmp_path / "tiny-experiment" / "checkpoint-2").mkdir(parents=True)
    assert _newest_unfinished(tmp_path, "tiny") == tmp_path / "tiny-20250102-000000"
    assert _newest_unfinished(tmp_path, "tiny-phi3v") == tmp_path / "tiny-phi3v-20250105-000000"
    assert _newest_unfinished(tmp_path, "phi-3-vision") is None
