"""The run directory: identity, appends, torn lines, atomic writes, the reader for reports."""

from __future__ import annotations

import os

import pytest

from harness.core.errors import HarnessError
from harness.core.run import load_run
from harness.core.schema import (
    DataInfo,
    GenerationInfo,
    MetricValue,
    ModelInfo,
    Record,
    RunConfig,
    RunMetrics,
)
from harness.core.store import RunStore, read_records, run_key, write_atomic


def config(**changes) -> RunConfig:
    base = {
        "task": "burberry",
        "model": ModelInfo(name="base", path="org/model", revision="abc"),
        "data": DataInfo(source="synthetic", split="test", fingerprint="f1", n_samples=3),
        "limit": 3,
    }
    return RunConfig(**{**base, **changes})


def record(i: int) -> Record:
    return Record(
        id=f"s{i}",
        image=f"/x/{i}.png",
        prompt="p",
        output=f"o{i}",
        truth={"name": "n", "label": "c", "amount": 1.0},
    )


def test_run_identity_is_what_decides_the_outputs():
    key = run_key(config())
    # Not the batch size, the device index, provenance or the name typed.
    assert key == run_key(config(batch_size=1, git_sha="x", created="now", device="cpu"))
    assert key == run_key(config(model=ModelInfo(name="phi-3-vision", path="org/model", revision="abc")))
    assert run_key(config(device="cuda:0")) == run_key(config(device="cuda:1"))
    assert key == run_key(
        config(generation=GenerationInfo(max_new_tokens="auto", resolved_max_new_tokens=40))
    )
    # Everything that can change an output does.
    assert key != run_key(config(limit=None))
    assert key != run_key(config(generation=GenerationInfo(max_new_tokens=8)))
    assert key != run_key(config(device="cuda:0"))
    assert key != run_key(config(dtype="bfloat16"))
    assert key != run_key(config(prompt="another question"))
    assert key != run_key(
        config(data=DataInfo(source="synthetic", split="test", fingerprint="f2", n_samples=3))
    )
    assert key != run_key(
        config(data=DataInfo(source="synthetic", split="test", fingerprint="f1", n_samples=3, split_seed=1))
    )
    for change in (
        {"revision": "def"},
        {"adapter": "/a"},
        {"num_crops": 4},
        {"attn_implementation": "eager"},
        {"trust_remote_code": True},
    ):
        model = {"name": "base", "path": "org/model", "revision": "abc", **change}
        assert key != run_key(config(model=ModelInfo(**model)))


def test_local_models_are_identified_by_content_not_path():
    def local(path, content, adapter=None, adapter_content=None):
        return config(
            model=ModelInfo(
                name="m", path=path, content=content, adapter=adapter, adapter_content=adapter_content
            )
        )

    assert run_key(local("/a/model", "h1")) == run_key(local("/moved/copy", "h1"))
    assert run_key(local("/a/model", "h1")) != run_key(local("/a/model", "h2"))  # re-written in place
    same = run_key(local("/m", "h1", "/out/x", "a1"))
    assert same == run_key(local("/m", "h1", "/elsewhere/x", "a1"))
    assert same != run_key(local("/m", "h1", "/out/x", "a2"))  # re-trained into the same directory


def test_append_resume_and_fresh(tmp_path):
    store = RunStore.open(tmp_path, config())
    assert store.dir.name == f"burberry__model__synthetic-test__n3__{store.dir.name.split('__')[-1]}"
    store.write_config(config())
    store.append([record(0), record(1)])
    store.append([record(2)])
    assert [r.id for r in RunStore.open(tmp_path, config()).records()] == ["s0", "s1", "s2"]
    store.finish(RunMetrics(task="burberry", model="base", n=3, metrics={"acc": MetricValue(value=0.5, n=3)}))
    assert store.finished().metrics["acc"].value == 0.5
    fresh = RunStore.open(tmp_path, config(), fresh=True)
    assert fresh.dir == store.dir and fresh.records() == [] and fresh.finished() is None


def test_torn_last_line_is_dropped_and_cut_away(tmp_path):
    store = RunStore.open(tmp_path, config())
    store.append([record(0), record(1)])
    intact = store.predictions_path.read_bytes()
    with open(store.predictions_path, "ab") as f:
        f.write(record(2).model_dump_json().encode()[:25])  # killed mid-write
    assert [r.id for r in read_records(store.predictions_path)] == ["s0", "s1"]
    assert len(store.predictions_path.read_bytes()) > len(intact)  # a plain read never modifies
    assert [r.id for r in store.records()] == ["s0", "s1"]
    assert store.predictions_path.read_bytes() == intact  # the runner's read repairs
    store.append([record(2)])
    assert [r.id for r in store.records()] == ["s0", "s1", "s2"]


def test_a_bad_complete_line_names_file_and_line(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text(record(0).model_dump_json() + "\n{not json}\n" + record(1).model_dump_json() + "\n")
    with pytest.raises(HarnessError, match=r"predictions.jsonl, line 2: not a valid record"):
        read_records(path)


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_atomic(path, "old")

    def crash(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_load_run_reads_a_run_and_rejects_other_directories(tmp_path):
    store = RunStore.open(tmp_path, config())
    store.write_config(config(key=store.dir.name.split("__")[-1]))
    store.append([record(0)])
    cfg, records, metrics = load_run(store.dir)
    assert cfg.model.path == "org/model" and [r.id for r in records] == ["s0"] and metrics is None
    with pytest.raises(HarnessError, match="not a run directory"):
        load_run(tmp_path)
    (store.dir / "metrics.json").write_text("{")
    with pytest.raises(HarnessError, match="metrics.json: not a valid metrics.json"):
        load_run(store.dir)


def test_opening_a_store_creates_nothing_until_the_run_starts(tmp_path):
    store = RunStore.open(tmp_path / "runs", config())
    assert not (tmp_path / "runs").exists() and store.finished() is None and store.records() == []
    store.write_config(config())
    store.write_config(config(batch_size=1))  # a resumed run keeps the config that started it
    assert RunConfig.model_validate_json(store.config_path.read_text()).batch_size == 8
