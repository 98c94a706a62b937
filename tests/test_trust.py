"""Every way a run could print a wrong number without saying so, each pinned by a regression test:
truncation, frozen errors, silent fallbacks, stale reuse of a finished run."""

from __future__ import annotations

import json
import math

import pytest
from test_runner import FakeTask, outputs, run

import backends.hf
from conftest import requests
from harness.core.errors import HarnessError
from harness.core.run import load_run
from harness.core.schema import ModelInfo
from harness.core.store import RunStore
from harness.identity import content_hash, hub_commit, pin
from harness.models import resolve


@pytest.fixture(scope="module")
def tiny():
    return resolve("tiny")


# ------------------------------------------------------------------ truncation


def test_truncated_answers_are_recorded_and_counted(tmp_path, tiny):
    run_dir = run(tmp_path, tiny, max_new_tokens=3)
    config, records, metrics = load_run(run_dir)
    # The random tiny model never says <|end|> within 3 tokens: every answer is cut.
    assert {(r.n_tokens, r.stop) for r in records} == {(3, "length")}
    assert metrics.n_truncated == 12 and config.generation.resolved_max_new_tokens == 3


def test_stop_reason_end_is_told_apart_from_length(tmp_path, tiny):
    generator = backends.hf.load_generator(tiny, device="cpu")
    data = FakeTask().load(str(tmp_path / "data"), "test")
    messages = FakeTask().messages(data.samples[0])
    from PIL import Image

    image = Image.open(data.samples[0].image).convert("RGB")
    first = generator.generate(requests([messages], [[image]], 6))[0]
    assert first.stop == "length" and first.n_tokens == 6
    emitted = generator.tokenizer(first.text, add_special_tokens=False)["input_ids"]
    generator.stop_ids = [emitted[1]]  # pretend its second token ends the turn
    ended = generator.generate(requests([messages], [[image]], 6))[0]
    assert (ended.stop, ended.n_tokens) == ("end", 2)


def test_default_budget_is_sized_from_the_task_targets(tmp_path, tiny):
    run_dir = run(tmp_path, tiny, max_new_tokens=None, limit=2)
    config, _, _ = load_run(run_dir)
    generator = backends.hf.load_generator(tiny, device="cpu")
    data = FakeTask().load(str(tmp_path / "data"), "test", limit=2)
    longest = max(generator.count_tokens(FakeTask().target(s)) for s in data.samples)
    assert config.generation.max_new_tokens == "auto"
    assert config.generation.resolved_max_new_tokens == math.ceil(1.25 * longest) + 8


# ------------------------------------------------------------------ errors are not frozen


def _failing_on(monkeypatch, bad_ids: set[str], tmp_path):
    """Make generation fail for the samples whose image is one of ``bad_ids``'."""
    data = FakeTask().load(str(tmp_path / "data"), "test")
    bad_images = {s.image for s in data.samples if s.id in bad_ids}
    pixels = set()
    from PIL import Image

    for path in bad_images:
        pixels.add(Image.open(path).convert("RGB").getpixel((0, 0)))
    real = backends.hf.HFGenerator.generate

    def flaky(self, batch):
        if any(r.images[0].getpixel((0, 0)) in pixels for r in batch):
            raise RuntimeError("device-side assert triggered")
        return real(self, batch)

    monkeypatch.setattr(backends.hf.HFGenerator, "generate", flaky)


def test_errored_samples_make_an_incomplete_run_and_are_retried_on_resume(tmp_path, tiny, monkeypatch):
    with monkeypatch.context() as patch:
        _failing_on(patch, {"s005"}, tmp_path)
        run_dir = run(tmp_path, tiny, batch_size=4)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "incomplete" and "1 of 12 samples errored" in metrics["reason"]
    assert RunStore(run_dir).finished() is None  # not "already finished": a re-run must retry it
    again = run(tmp_path, tiny, batch_size=4)  # the device recovered
    assert again == run_dir
    _, records, metrics = load_run(run_dir)
    latest = {r.id: r for r in records}  # the last line of an id is its record
    assert latest["s005"].error is None and latest["s005"].output is not None
    assert metrics.status == "complete" and metrics.n_errors == 0 and metrics.n == 12
    reference = outputs(run(tmp_path, tiny, output_dir=tmp_path / "ref"))
    assert {i: r.output for i, r in latest.items()} == reference


def test_a_run_whose_every_sample_fails_stops_with_the_error(tmp_path, tiny, monkeypatch):
    _failing_on(monkeypatch, {f"s{i:03d}" for i in range(12)}, tmp_path)
    with pytest.raises(HarnessError, match=r"stopped after 8 generation errors in a row.*device-side assert"):
        run(tmp_path, tiny, batch_size=4)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert not (run_dir / "metrics.json").exists()  # never written as finished


def test_error_rate_threshold_is_a_flag(tmp_path, tiny, monkeypatch):
    _failing_on(monkeypatch, {"s005"}, tmp_path)
    run_dir = run(tmp_path, tiny, batch_size=4, max_error_rate=0.10)  # 1 of 12 = 8.3 % is tolerated
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "complete"


def test_cli_exits_non_zero_on_an_incomplete_run(tmp_path, monkeypatch):
    from PIL import Image
    from typer.testing import CliRunner

    from harness.cli import app
    from tasks import get_task

    samples = get_task("burberry").load("synthetic", "test", limit=9).samples
    bad = {Image.open(s.image).convert("RGB").tobytes() for s in samples[:2]}  # 2 of 9 always fail
    real = backends.hf.HFGenerator.generate

    def two_samples_fail(self, batch):
        if any(r.images[0].tobytes() in bad for r in batch):
            raise RuntimeError("flaky")
        return real(self, batch)

    monkeypatch.setattr(backends.hf.HFGenerator, "generate", two_samples_fail)
    args = ["run", "--model", "tiny", "--data", "synthetic", "--limit", "9", "--max-new-tokens", "4"]
    result = CliRunner().invoke(app, [*args, "--batch-size", "1", "--output-dir", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "INCOMPLETE" in result.output


# ------------------------------------------------------------------ out of memory


def test_out_of_memory_halves_the_batch_and_says_so_once(tmp_path, tiny, monkeypatch, capsys):
    real = backends.hf.HFGenerator.generate
    sizes = []

    def small_memory(self, batch):
        sizes.append(len(batch))
        if len(batch) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, batch)

    monkeypatch.setattr(backends.hf.HFGenerator, "generate", small_memory)
    capsys.readouterr()
    run_dir = run(tmp_path, tiny, batch_size=8)
    _, records, metrics = load_run(run_dir)
    assert sizes[:3] == [8, 4, 2] and 1 not in sizes  # halved, never one-by-one
    assert metrics.batch_size == 2 and {r.batch_size for r in records} == {2}
    assert metrics.n_errors == 0 and metrics.status == "complete"
    said = capsys.readouterr()
    assert (said.out + said.err).count(
        "out of memory at batch"
    ) == 2  # 8 -> 4, 4 -> 2: each halving said once


# ------------------------------------------------------------------ stale reuse


def test_a_finished_run_is_rescored_when_the_scorers_change(tmp_path, tiny, monkeypatch, capsys):
    first = run(tmp_path, tiny)
    monkeypatch.setattr(backends.hf, "load_generator", lambda *a, **k: pytest.fail("model loaded"))
    task = FakeTask()
    task.scoring = "v2"
    task.parse = lambda text: FakeTask.parse(task, "item 0")  # a "fixed" parser
    capsys.readouterr()
    again = run(tmp_path, tiny, task=task)
    assert again == first and "re-scored" in capsys.readouterr().out
    _, records, metrics = load_run(first)
    assert metrics.scoring == "v2" and {r.parsed["name"] for r in records} == {"item 0"}
    assert metrics.metrics["name_exact"].value == pytest.approx(1 / 12)


def test_local_model_content_is_part_of_the_identity(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"a" * 100)
    (model / "config.json").write_text("{}")
    (model / "checkpoint-5").mkdir()
    (model / "checkpoint-5" / "optimizer.pt").write_bytes(b"x")
    first = content_hash(model)
    assert content_hash(model) == first
    (model / "checkpoint-5" / "optimizer.pt").write_bytes(b"y")  # not part of the model
    assert content_hash(model) == first
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in ("weights.bin", "config.json"):
        (copy / f).write_bytes((model / f).read_bytes())
    assert content_hash(copy) == first  # the same model elsewhere
    (model / "weights.bin").write_bytes(b"b" * 100)  # re-trained in place, same size
    assert content_hash(model) != first
    info = pin(ModelInfo(name="m", path=str(model)))
    assert info.content == content_hash(model) and info.revision is None


def test_a_hub_model_is_pinned_to_its_current_commit(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--org--model"
    old, new = "a" * 40, "b" * 40
    for sha in (old, new):
        (repo / "snapshots" / sha).mkdir(parents=True)
        (repo / "snapshots" / sha / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(old)
    assert hub_commit("org/model", "main") == old
    assert pin(ModelInfo(name="m", path="org/model", revision="main")).revision == old
    (repo / "refs" / "main").write_text(new)  # the branch moved: so does the run identity
    assert pin(ModelInfo(name="m", path="org/model", revision="main")).revision == new
    assert hub_commit("org/model", "c" * 40) == "c" * 40  # a commit is already pinned
    with pytest.raises(HarnessError, match="cannot resolve revision 'v2'.*--revision"):
        hub_commit("org/model", "v2")
