"""Past one process: data-parallel evaluation and DDP training as real processes (torchrun, gloo).

Each test starts `harness ... --processes 2` as a subprocess, which relaunches itself through
`torch.distributed.run`: the same path `accelerate launch -m harness.cli ...` takes on GPUs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.core.run import load_run
from harness.core.schema import TRAIN_MANIFEST_FILE, TrainManifest
from harness.core.store import rank_files, read_records
from harness.distributed import shard

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
EVAL = ["run", "--model", "tiny", "--data", "synthetic", "--limit", "20", "--max-new-tokens", "8"]


def harness(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def only_run(out: Path) -> Path:
    (run_dir,) = [p for p in out.iterdir() if (p / "config.json").is_file()]
    return run_dir


def comparable(run_dir: Path):
    """A run's outputs and numbers, without what may differ between equal runs (timings, batching)."""
    _, records, metrics = load_run(run_dir)
    drop = {"latency_s", "batch_size"}
    return [r.model_dump(exclude=drop) for r in records], metrics.model_dump(
        exclude={"wall_s", "timed", "batch_size"}
    )


def test_shards_are_disjoint_cover_everything_balance_cost_and_agree():
    items = list(range(37))
    cost = {i: (i * 7919) % 13 + 1 for i in items}.__getitem__
    shards = [shard(items, rank, 3, cost) for rank in range(3)]
    assert sorted(i for s in shards for i in s) == items and sum(map(len, shards)) == len(items)
    loads = [sum(cost(i) for i in s) for s in shards]
    assert max(loads) - min(loads) <= max(map(cost, items))  # greedy costliest-first balance
    assert shards == [shard(items, rank, 3, cost) for rank in range(3)]  # every rank computes the same
    assert [items.index(i) for i in shards[0]] == sorted(items.index(i) for i in shards[0])  # keeps order


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dp-reference")
    harness(*EVAL, "--batch-size", "4", "--output-dir", str(out), cwd=out)
    return only_run(out)


def test_two_processes_give_the_single_process_run(reference, tmp_path):
    harness(*EVAL, "--batch-size", "4", "--output-dir", str(tmp_path), "--processes", "2", cwd=tmp_path)
    run_dir = only_run(tmp_path)
    assert run_dir.name == reference.name  # the same identity: the process count is not part of it
    assert not rank_files(run_dir)  # merged into predictions.jsonl
    assert comparable(run_dir) == comparable(reference)


@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2)])
def test_an_interrupted_run_resumes_with_another_process_count(reference, tmp_path, before, after):
    """What a run killed after some batches leaves behind, resumed with another number of processes."""
    records = read_records(reference / "predictions.jsonl")
    run_dir = tmp_path / reference.name
    run_dir.mkdir()
    (run_dir / "config.json").write_text((reference / "config.json").read_text())
    kept = records[:5] + records[9:13]  # the samples the interrupted run had flushed
    if before == 2:  # one file per rank, as an interrupted data-parallel run leaves them
        (run_dir / "predictions.rank0.jsonl").write_text(
            "".join(r.model_dump_json() + "\n" for r in kept[:5])
        )
        (run_dir / "predictions.rank1.jsonl").write_text(
            "".join(r.model_dump_json() + "\n" for r in kept[5:])
        )
    else:
        (run_dir / "predictions.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in kept))
    marker = {r.id: r.model_copy(update={"latency_s": 123.0}) for r in kept}  # proof of no regeneration
    for path in [run_dir / "predictions.jsonl", *rank_files(run_dir)]:
        if path.exists():
            lines = [json.loads(line) for line in path.read_text().splitlines()]
            path.write_text("".join(marker[d["id"]].model_dump_json() + "\n" for d in lines))
    harness(
        *EVAL, "--batch-size", "4", "--output-dir", str(tmp_path), "--processes", str(after), cwd=tmp_path
    )
    assert not rank_files(run_dir)
    _, final, metrics = load_run(run_dir)
    assert [r.id for r in final] == [r.id for r in records] and metrics.n == 20
    assert {r.id for r in final if r.latency_s == 123.0} == set(marker)  # flushed samples were kept
    assert comparable(run_dir) == comparable(reference)


def test_two_process_training_learns_as_one_process_does_and_resumes(tmp_path):
    common = ["train", "--model", "tiny", "--data", "synthetic", "--n-eval", "16"]
    results = {}
    for processes in (1, 2):
        out = tmp_path / f"p{processes}"
        harness(*common, "--max-steps", "60", "--eval-every", "60", "--output-dir", str(out),
                "--processes", str(processes), cwd=tmp_path)  # fmt: skip
        results[processes] = TrainManifest.model_validate_json((out / TRAIN_MANIFEST_FILE).read_text())
    one, two = results[1], results[2]
    assert two.steps == 60 and two.metrics["parsed"] >= 0.75 and one.metrics["parsed"] >= 0.75
    assert abs(two.metrics["train_loss"] - one.metrics["train_loss"]) < 0.5  # measured: 2.11 vs 1.96
    assert two.metrics["history"][-1]["step"] == 60  # the evaluation ran (on rank 0) at the end

    out = tmp_path / "resumed"
    harness(
        *common,
        "--max-steps",
        "4",
        "--save-steps",
        "2",
        "--output-dir",
        str(out),
        "--processes",
        "2",
        cwd=tmp_path,
    )
    first = (out / "adapter_model.safetensors").read_bytes()
    harness(
        *common, "--max-steps", "6", "--resume", "--output-dir", str(out), "--processes", "2", cwd=tmp_path
    )
    manifest = TrainManifest.model_validate_json((out / TRAIN_MANIFEST_FILE).read_text())
    assert manifest.steps == 6 and (out / "adapter_model.safetensors").read_bytes() != first
