"""scripts/gpu_proof.sh in its CPU form (tiny-phi3v): every step runs and records its figures.

On a GPU the same script measures the real-size Phi-3-Vision; here it proves the
script itself works, so that the GPU minutes are spent measuring, not debugging.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def test_gpu_proof_cpu_form_records_every_figure(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_proof.sh"), "--tiny"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "torch 2." in result.stdout  # the versions used are printed
    figures = json.loads((tmp_path / "gpu_proof.json").read_text())
    errors = {k: v["error"] for k, v in figures.items() if isinstance(v, dict) and "error" in v}
    assert errors == {}
    grid = {k: v for k, v in figures["evaluation"].items() if k != "step_s"}
    assert set(grid) == {"crops4_batch1", "crops4_batch4"} and all(
        c["samples_per_s"] > 0 for c in grid.values()
    )
    bare = figures["bare_loop"]["crops4_batch4"]
    assert 0 < bare["fraction_of_compute_limit"] and 0 < bare["harness_over_bare"] <= 1.5
    assert all("error" not in c for c in grid.values())
    invariance = figures["batch_invariance"]["crops4_batch4_vs_batch1"]
    assert invariance["samples"] == 6 and invariance["differ"] == 0  # fp32 on a CPU: identical answers
    assert figures["lora"]["steps"] == 3 and figures["lora"]["images_per_s"] > 0
    assert "skipped" in figures["qlora"]  # no CUDA here: said, not hidden
    assert figures["export"]["size_gb"] > 0 and figures["export"]["load_s"] >= 0
