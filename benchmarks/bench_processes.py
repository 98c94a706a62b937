"""Data-parallel speed on this machine: 1 vs 2 processes for `harness run` and `harness train`.

Whole commands, cold processes, tiny model: evaluation of the 118 synthetic test samples (batch 8,
max_new_tokens 48) and 60 training steps (per-device batch 8), each with `--processes 1` and `2`.
Each process runs one torch thread. The ratio is the wall-time speed-up of two processes.

    PYTHONPATH=. python benchmarks/bench_processes.py [tiny | tiny-phi3v]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(args: list[str], env: dict, cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "harness.cli", *args], env=env, cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - t0


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-processes-"))
    env = {**os.environ, "HARNESS_CACHE": str(root / "cache"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "WANDB_MODE": "offline", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}  # fmt: skip
    model = sys.argv[1] if len(sys.argv) > 1 else "tiny"
    evaluate = ["run", "--model", model, "--data", "synthetic", "--batch-size", "8", "--max-new-tokens", "48"]
    train = ["train", "--model", model, "--data", "synthetic", "--max-steps", "60", "--eval-every", "0"]
    timed(
        [*evaluate, "--limit", "2", "--output-dir", str(root / "warm")], env, root
    )  # builds the model + data
    print(f"model {model}")
    rows = []
    for name, args in (("evaluation", evaluate), ("training", train)):
        times = {}
        for n in (1, 2):
            out = root / f"{name}-{n}"
            times[n] = timed([*args, "--output-dir", str(out), "--processes", str(n)], env, root)
        rows.append((name, times[1], times[2]))
    print(f"{os.cpu_count()} CPUs, one torch thread per process")
    for name, one, two in rows:
        print(f"{name:<11} 1 process {one:6.1f} s   2 processes {two:6.1f} s   speed-up {one / two:.2f}x")


if __name__ == "__main__":
    main()
