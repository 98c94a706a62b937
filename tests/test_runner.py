"""The eval loop on the tiny model with a small self-contained task: errors, resume, finished re-runs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import backends.hf
from harness.core.errors import HarnessError
from harness.core.run import load_run
from harness.core.schema import DataInfo, FieldInfo, MetricSpec, MetricValue, Record, Sample
from harness.models import resolve
from harness.options import EvalOptions
from harness.runner import run_eval
from tasks.base import TaskData


class FakeTask:
    """A task whose data lives in ``source`` (a directory of PNGs it writes itself)."""

    name = "fake"
    description = "test task"
    split_seed = 0
    scoring = "v1"
    prompt = "default"
    source = "test"

    def load(self, source, split, *, limit=None, cache_dir=None) -> TaskData:
        seed = 0
        root = Path(source)
        root.mkdir(parents=True, exist_ok=True)
        samples = []
        for i in range(limit or 12):
            path = root / f"{i:03d}.png"
            if not path.exists():
                pixels = np.random.default_rng(seed * 1000 + i).integers(0, 256, (40, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(path)
            truth = {"name": f"item {i}", "category": "BAGS" if i % 2 else "SHOES", "price": 100.0 + i}
            samples.append(Sample(id=f"s{i:03d}", image=str(path), truth=truth))
        digest = hashlib.sha256(b"".join(Path(s.image).read_bytes() for s in samples)).hexdigest()
        info = DataInfo(source=str(root), split=split, fingerprint=digest, n_samples=len(samples))
        return TaskData(samples=samples, info=info)

    def messages(self, sample):
        return [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Name the product."}]}
        ]

    def target(self, sample):
        return sample.truth["name"]

    def prompt_identity(self):
        return "name-the-product"

    def scoring_identity(self):
        return self.scoring

    def field_infos(self):
        return [FieldInfo(name="name", kind="text")]

    def metric_specs(self):
        return [
            MetricSpec(name="name_exact", label="name exact", role="accuracy", binary=True),
            MetricSpec(name="answered", label="answered", role="read_rate"),
        ]

    def parse(self, text):
        return {"name": text.strip() or None}

    def score(self, truths, parsed):
        return [
            {"name_exact": float(p.get("name") == t["name"]), "answered": float(p.get("name") is not None)}
            for t, p in zip(truths, parsed, strict=True)
        ]

    def aggregate(self, records: list[Record]):
        metrics = {}
        for key in ("name_exact", "answered"):
            values = [r.scores[key] for r in records if r.scores.get(key) is not None]
            metrics[key] = MetricValue(
                value=sum(values) / len(values), ci_low=0.0, ci_high=1.0, n=len(values)
            )
        return metrics, {}


@pytest.fixture(scope="module")
def tiny():
    return resolve("tiny")


def run(tmp_path, tiny, **kwargs) -> Path:
    task, model = kwargs.pop("task", FakeTask()), kwargs.pop("model", tiny)
    options = {
        "data": str(tmp_path / "data"),
        "output_dir": tmp_path / "runs",
        "max_new_tokens": 8,
        "device": "cpu",
    }
    return run_eval(task, model, EvalOptions.build(**{**options, **kwargs}))


def outputs(run_dir: Path) -> dict[str, str | None]:
    _, records, _ = load_run(run_dir)
    return {r.id: r.output for r in records}


def test_run_writes_config_records_and_metrics(tmp_path, tiny):
    run_dir = run(tmp_path, tiny, batch_size=4)
    config, records, metrics = load_run(run_dir)
    assert [r.id for r in records] == [f"s{i:03d}" for i in range(12)]
    assert all(r.output is not None and r.error is None and r.prompt.startswith("<|user|>") for r in records)
    assert metrics.n == 12 and metrics.n_errors == 0 and set(metrics.metrics) == {"name_exact", "answered"}
    assert config.model.path == tiny.path and config.device == "cpu" and config.dtype == "float32"
    assert {"torch", "transformers", "peft", "datasets", "harness"} <= set(config.versions)
    assert run_dir.name.startswith("fake__tiny__data-test__nall__") and run_dir.name.endswith(config.key)


def test_batch_size_does_not_change_the_run(tmp_path, tiny):
    one = run(tmp_path, tiny, batch_size=1, output_dir=tmp_path / "a")
    eight = run(tmp_path, tiny, batch_size=8, output_dir=tmp_path / "b")
    assert one.name == eight.name  # same run identity: batch size is not part of it
    assert outputs(one) == outputs(eight)
    assert len(set(outputs(one).values())) > 1  # the images differ and so do the answers


def test_corrupt_image_is_recorded_counted_and_the_run_goes_on(tmp_path, tiny):
    data = FakeTask().load(str(tmp_path / "data"), "test")
    Path(data.samples[3].image).write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    run_dir = run(tmp_path, tiny, batch_size=4)
    _, records, metrics = load_run(run_dir)
    bad = {r.id: r for r in records if r.error}
    assert list(bad) == ["s003"] and bad["s003"].error.startswith("image: ")
    assert bad["s003"].scores == {"name_exact": 0.0, "answered": 0.0}  # counted as a miss
    assert metrics.n == 12 and metrics.n_errors == 1
    assert sum(r.output is not None for r in records) == 11


def test_generation_error_in_a_batch_is_retried_one_by_one(tmp_path, tiny, monkeypatch):
    real = backends.hf.HFGenerator.generate

    def flaky(self, batch):
        if any(r.images[0].getpixel((0, 0)) == first_pixel for r in batch):
            raise RuntimeError("boom\nsecond line")
        return real(self, batch)

    data = FakeTask().load(str(tmp_path / "data"), "test")
    first_pixel = Image.open(data.samples[5].image).convert("RGB").getpixel((0, 0))
    monkeypatch.setattr(backends.hf.HFGenerator, "generate", flaky)
    _, records, metrics = load_run(run(tmp_path, tiny, batch_size=4))
    assert [r.id for r in records if r.error] == ["s005"]
    assert records[5].error == "generation: RuntimeError: boom"
    assert metrics.n_errors == 1 and all(r.output is not None for r in records if r.id != "s005")


def test_finished_rerun_reprints_without_loading_the_model(tmp_path, tiny, monkeypatch, capsys):
    first = run(tmp_path, tiny, batch_size=4)
    before = (first / "metrics.json").read_bytes(), (first / "predictions.jsonl").read_bytes()

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded for a finished run")

    monkeypatch.setattr(backends.hf, "load_generator", refuse)
    capsys.readouterr()
    again = run(tmp_path, tiny, batch_size=2)
    assert again == first
    assert before == ((first / "metrics.json").read_bytes(), (first / "predictions.jsonl").read_bytes())
    assert "name exact" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="model was loaded"):
        run(tmp_path, tiny, batch_size=2, fresh=True)  # --fresh really starts over


def test_resume_runs_only_the_missing_samples(tmp_path, tiny, monkeypatch):
    reference = outputs(run(tmp_path, tiny, batch_size=4, output_dir=tmp_path / "ref"))
    run_dir = run(tmp_path, tiny, batch_size=4)
    lines = (run_dir / "predictions.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "predictions.jsonl").write_text("".join(lines[:5]) + lines[5][:40])  # torn 6th line
    (run_dir / "metrics.json").unlink()
    asked = []
    real = backends.hf.HFGenerator.generate
    monkeypatch.setattr(
        backends.hf.HFGenerator, "generate", lambda self, batch: asked.append(len(batch)) or real(self, batch)
    )
    run(tmp_path, tiny, batch_size=4)
    assert sum(asked) == 7
    assert outputs(run_dir) == reference
    assert json.loads((run_dir / "metrics.json").read_text())["n"] == 12


def test_bad_arguments_are_harness_errors(tmp_path, tiny):
    with pytest.raises(HarnessError, match="batch-size"):
        run(tmp_path, tiny, batch_size=0)
    with pytest.raises(HarnessError, match="unknown task 'nope'"):
        run(tmp_path, tiny, task="nope")
    with pytest.raises(HarnessError, match="unknown model"):
        run(tmp_path, "no-such-model")


def test_cli_runs_the_burberry_task_end_to_end(tmp_path):
    from typer.testing import CliRunner

    from harness.cli import app

    args = ["run", "--model", "tiny", "--data", "synthetic", "--limit", "6", "--max-new-tokens", "8"]
    args += ["--output-dir", str(tmp_path), "--device", "cpu"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    (run_dir,) = tmp_path.iterdir()
    config, records, metrics = load_run(run_dir)
    assert config.task == "burberry" and config.data.synthetic and len(records) == metrics.n == 6
    assert {"name_exact", "category_exact"} <= set(metrics.metrics)
    again = CliRunner().invoke(app, [*args, "--batch-size", "2"])
    assert again.exit_code == 0 and "already finished" in again.output
    bad = CliRunner().invoke(app, ["run", "--model", "no-such-model", "--data", "synthetic"])
    assert bad.exit_code == 2 and "error: unknown model 'no-such-model'" in bad.output
