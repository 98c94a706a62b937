"""A real process running an eval is SIGKILLed mid-way; the resumed run equals an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_runner import FakeTask  # tests/ is on sys.path

from harness.core.run import load_run
from harness.models import resolve
from harness.options import EvalOptions
from harness.runner import run_eval

TESTS = Path(__file__).resolve().parent

# The killed process: the real runner and backend; each batch is held back a little so the kill
# reliably lands after some batches were flushed and before the run finishes.
SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
import backends.hf
from harness.options import EvalOptions
from harness.runner import run_eval
from test_runner import FakeTask

real = backends.hf.HFGenerator.generate
def slow(self, *args):
    time.sleep(0.1)
    return real(self, *args)
backends.hf.HFGenerator.generate = slow
run_eval(FakeTask(), "tiny", EvalOptions(data={data!r}, limit=20, batch_size=2, output_dir={out!r}, max_new_tokens=12, device="cpu"))
"""


def complete_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_sigkilled_run_resumes_to_exactly_the_uninterrupted_result(tmp_path):
    resolve("tiny")  # built here, not raced by the child
    data, killed_out = str(tmp_path / "data"), tmp_path / "killed"
    script = SCRIPT.format(tests=str(TESTS), data=data, out=str(killed_out))
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    predictions = None
    while time.monotonic() < deadline and child.poll() is None:
        found = list(killed_out.glob("*/predictions.jsonl"))
        if found and complete_lines(found[0]) >= 4:
            predictions = found[0]
            break
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    _, stderr = child.communicate()
    assert child.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    assert predictions is not None
    run_dir = predictions.parent
    assert not (run_dir / "metrics.json").exists()
    flushed = complete_lines(predictions)
    assert 4 <= flushed < 20

    # A different batch size resumes the same run.
    resumed = run_eval(
        FakeTask(),
        "tiny",
        EvalOptions(data=data, limit=20, batch_size=4, output_dir=killed_out, max_new_tokens=12),
    )
    assert resumed == run_dir
    reference = run_eval(
        FakeTask(), "tiny", EvalOptions(data=data, limit=20, output_dir=tmp_path / "ref", max_new_tokens=12)
    )
    _, records, metrics = load_run(resumed)
    _, ref_records, ref_metrics = load_run(reference)
    assert [r.id for r in records] == [f"s{i:03d}" for i in range(20)]  # exactly one record per sample
    strip = {"latency_s", "batch_size"}
    assert [r.model_dump(exclude=strip) for r in records] == [
        r.model_dump(exclude=strip) for r in ref_records
    ]
    session = {"wall_s", "batch_size", "timed"}  # what the resuming session itself measured
    assert metrics.model_dump(exclude=session) == ref_metrics.model_dump(exclude=session)
    assert (
        ref_metrics.timed == 20 and metrics.timed == 20 - flushed
    )  # only the missing samples were generated
