"""What glibc malloc's unmapping costs a CPU training/eval run: HARNESS_MALLOC=0 vs the default.

Whole commands, cold processes, tiny-phi3v: `harness train` for --steps optimizer steps (its
validation generation included) and then `harness run` on the first --limit synthetic test samples,
once with the allocator left as glibc sets it (HARNESS_MALLOC=0) and once tuned by the CLI
(harness/core/allocator.py: large freed buffers stay mapped). Runs alternate; the median of each
is taken. Times are the children's own CPU times (user, system) from wait4, so another load on the
machine slows the wall time but hardly the ratios. `--workload demo` times `harness demo --quick`
instead. The user's own MALLOC_* / GLIBC_TUNABLES / LD_PRELOAD are removed for both.

    PYTHONPATH=. python benchmarks/bench_allocator.py [--repeats 2] [--steps 20] [--limit 16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {"glibc default": {"HARNESS_MALLOC": "0"}, "tuned": {}}


def measured(args: list[str], env: dict, cwd: Path) -> dict[str, float]:
    """One command in a fresh process: its wall, user and system seconds, minor faults, max RSS."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", *args], env=env, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: harness {' '.join(args)}")
    return {"wall": wall, "user": usage.ru_utime, "sys": usage.ru_stime, "faults": usage.ru_minflt,
            "rss": usage.ru_maxrss / 1024}  # fmt: skip


def workload(kind: str, root: Path, name: str, steps: int, limit: int) -> list[list[str]]:
    if kind == "demo":
        return [["demo", "--quick", "--workdir", str(root / name)]]
    return [
        ["train", "--model", "tiny-phi3v", "--data", "synthetic", "--max-steps", str(steps),
         "--output-dir", str(root / name / "train")],
        ["run", "--model", "tiny-phi3v", "--data", "synthetic", "--limit", str(limit), "--batch-size", "16",
         "--output-dir", str(root / name / "runs")],
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20, help="training steps (train workload)")
    parser.add_argument("--limit", type=int, default=16, help="evaluated samples (train workload)")
    parser.add_argument("--workload", choices=["train", "demo"], default="train")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-allocator-"))
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("MALLOC_") or k in ("GLIBC_TUNABLES", "LD_PRELOAD", "HARNESS_MALLOC"))}  # fmt: skip
    env |= {"HARNESS_CACHE": str(root / "cache"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}  # fmt: skip
    # Builds the tiny model and the synthetic catalog once, outside the timings.
    measured(["run", "--model", "tiny-phi3v", "--data", "synthetic", "--limit", "2",
              "--output-dir", str(root / "warm")], env, root)  # fmt: skip

    results: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    for repeat in range(args.repeats):
        for name, extra in VARIANTS.items():
            total = dict.fromkeys(("wall", "user", "sys", "faults"), 0.0) | {"rss": 0.0}
            for command in workload(
                args.workload, root, f"{name.split()[0]}-{repeat}", args.steps, args.limit
            ):
                one = measured(command, env | extra, root)
                total = {k: max(total[k], one[k]) if k == "rss" else total[k] + one[k] for k in total}
            results[name].append(total)

    med = {
        name: {k: statistics.median(r[k] for r in rows) for k in rows[0]} for name, rows in results.items()
    }
    label = (
        "harness demo --quick" if args.workload == "demo" else f"train {args.steps} steps + run {args.limit}"
    )
    print(f"{label}; {os.cpu_count()} CPUs, median of {args.repeats}, alternating")
    print(
        f"{'':<14} {'wall s':>7} {'user s':>7} {'sys s':>7} {'sys %':>6} {'minor faults':>13} {'max RSS MiB':>12}"
    )
    for name, m in med.items():
        share = 100 * m["sys"] / (m["user"] + m["sys"])
        print(f"{name:<14} {m['wall']:7.1f} {m['user']:7.1f} {m['sys']:7.1f} {share:6.1f} "
              f"{m['faults']:13,.0f} {m['rss']:12.0f}")  # fmt: skip
    a, b = med["glibc default"], med["tuned"]
    cpu = (a["user"] + a["sys"]) / (b["user"] + b["sys"])
    print(f"ratio default/tuned: wall {a['wall'] / b['wall']:.2f}x, CPU time {cpu:.2f}x, "
          f"system time {a['sys'] / max(b['sys'], 1e-9):.1f}x, faults {a['faults'] / max(b['faults'], 1):.1f}x, "
          f"max RSS {b['rss'] / a['rss']:.2f}x (tuned/default)")  # fmt: skip


if __name__ == "__main__":
    main()
