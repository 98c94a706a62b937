"""Evaluation speed on the tiny model, as ratios measured in one run on one machine.

1. Batched (batch 16) vs one-by-one generation, samples/s, at identical outputs (asserted).
2. A finished re-run vs the first run of ``harness.evaluate`` (the re-run must not load the model).

    PYTHONPATH=. python benchmarks/bench_eval.py [--limit N] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="default: the whole test split")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64, help="the CLI's default")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads; 1 keeps numbers stable on a shared machine"
    )
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HARNESS_CACHE", tempfile.mkdtemp(prefix="bench-eval-cache-"))
    import torch
    from PIL import Image

    from backends.base import GenerationRequest
    from backends.hf import load_generator
    from harness.api import evaluate
    from harness.models import resolve
    from tasks import get_task

    torch.set_num_threads(args.threads)
    task, info = get_task("burberry"), resolve("tiny")
    samples = task.load("synthetic", "test", limit=args.limit).samples
    generator = load_generator(info, device="cpu")
    asked = [
        GenerationRequest(task.messages(s), [Image.open(s.image).convert("RGB")], args.max_new_tokens)
        for s in samples
    ]
    generator.generate(asked[:2])  # warm-up

    t0 = time.perf_counter()
    single = [generator.generate([request])[0] for request in asked]
    t_single = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched = []
    for i in range(0, len(samples), args.batch_size):
        batched += generator.generate(asked[i : i + args.batch_size])
    t_batched = time.perf_counter() - t0
    assert batched == single, "batched outputs differ from one-by-one outputs"

    with tempfile.TemporaryDirectory() as out:
        kwargs = dict(
            task="burberry", model="tiny", data="synthetic", limit=args.limit, batch_size=args.batch_size,
            output_dir=Path(out), max_new_tokens=args.max_new_tokens, device="cpu",
        )  # fmt: skip
        t0 = time.perf_counter()
        evaluate(**kwargs)
        t_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        evaluate(**kwargs)
        t_rerun = time.perf_counter() - t0

    n = len(samples)
    print(f"\nmachine: {os.cpu_count()} CPUs, {cpu_model()}; torch threads: {torch.get_num_threads()}")
    print(f"tiny model, {n} burberry synthetic test samples, max_new_tokens={args.max_new_tokens}")
    print(f"one-by-one : {n / t_single:8.1f} samples/s ({t_single:.2f} s)")
    print(
        f"batch {args.batch_size:<4} : {n / t_batched:8.1f} samples/s ({t_batched:.2f} s)  outputs identical"
    )
    print(f"batching speed-up: {t_single / t_batched:.1f}x (target >= 6x)")
    print(f"first evaluate: {t_first:.2f} s; finished re-run: {t_rerun * 1000:.1f} ms")
    print(f"finished re-run speed-up: {t_first / t_rerun:.0f}x (target >= 100x)")


if __name__ == "__main__":
    main()
