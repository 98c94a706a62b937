"""Every VLM family's tiny model: evaluation samples/s at batch 1 vs batch 8, and training samples/s.

    PYTHONPATH=. python benchmarks/bench_families.py [--samples 32] [--tokens 24] [--steps 20]

Run where every family loads (torchvision installed, as `tox -e families` has it). Generation runs
to a fixed length (``min_new_tokens`` = ``max_new_tokens``) so that batch sizes compare like for
like, on the synthetic Burberry test images through the harness's own generator; the batch-8
answers are checked equal to the one-at-a-time ones. Training: whole optimizer steps of the family's
tiny recipe at batch 8 (bench_train.py), no generation callback. One torch thread.
"""

from __future__ import annotations

import argparse
import time

from bench_train import bench as bench_train  # benchmarks/ is on sys.path when a script of it runs

TINY = {
    "llava": "tiny", "phi3v": "tiny-phi3v", "qwen2_5_vl": "tiny-qwen2.5-vl", "qwen3_vl": "tiny-qwen3-vl",
    "gemma3": "tiny-gemma3", "smolvlm": "tiny-smolvlm", "llava_onevision": "tiny-llava-onevision",
    "llava_next": "tiny-llava-next", "internvl": "tiny-internvl",
}  # fmt: skip


def bench_eval(name: str, n: int, tokens: int) -> tuple[float, float]:
    from PIL import Image

    from backends.base import GenerationRequest
    from backends.hf import load_generator
    from harness.models import resolve
    from tasks import get_task

    task = get_task("burberry")
    generator = load_generator(resolve(name), device="cpu")
    asked = [
        GenerationRequest(task.messages(s), [Image.open(s.image).convert("RGB")], tokens, tokens)
        for s in task.load("synthetic", "test", limit=n).samples
    ]
    generator.generate(asked[:2])  # warm-up
    t0 = time.perf_counter()
    alone = [generator.generate([r])[0] for r in asked]
    one = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    batched = [g for i in range(0, n, 8) for g in generator.generate(asked[i : i + 8])]
    eight = n / (time.perf_counter() - t0)
    assert batched == alone, f"{name}: batch 8 answers differ from one at a time"
    return one, eight


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--families", nargs="+", default=list(TINY))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    print(f"{'family':<16} {'eval b1/s':>9} {'eval b8/s':>9} {'b8/b1':>6} {'train b8/s':>10}")
    for family in args.families:
        one, eight = bench_eval(TINY[family], args.samples, args.tokens)
        train = bench_train(TINY[family], args.steps, 8)["trainer_samples_per_s"]
        print(f"{family:<16} {one:>9.1f} {eight:>9.1f} {eight / one:>5.1f}x {train:>10.1f}")


if __name__ == "__main__":
    main()
