"""tiny-phi3v generation: batched vs one-by-one, samples/s and peak memory, on whatever device is here.

Outputs must be identical either way (asserted), so the ratio is a pure speed measurement.

    PYTHONPATH=. python benchmarks/bench_phi3v.py [--n 32] [--batch-size 16] [--max-new-tokens 48]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path


def images(n: int):
    """Random-noise images of several aspect ratios (portrait, landscape, square)."""
    import torch
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    sizes = [(64, 48), (48, 64), (64, 64), (120, 30)]
    out = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        out.append(Image.fromarray(torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from backends.phi3v import build_tiny_phi3v, load

    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    path = build_tiny_phi3v(Path(tempfile.mkdtemp(prefix="bench-phi3v-")) / "tiny-phi3v")
    model, processor = load(path, dtype=torch.float32, device=device)
    texts = [f"Describe item {i}{' in detail' * (i % 3)}." for i in range(args.n)]
    prompts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": t}]}]
        )
        for t in texts
    ]
    pics = images(args.n)

    def run(batch_size: int) -> tuple[list[list[int]], float]:
        outs: list[list[int]] = []
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(0, args.n, batch_size):
            batch = processor(prompts[i : i + batch_size], pics[i : i + batch_size]).to(device)
            with torch.inference_mode():
                out = model.generate(
                    **batch,
                    max_new_tokens=args.max_new_tokens,
                    min_new_tokens=args.max_new_tokens,
                    do_sample=False,
                )
            outs += out[:, batch["input_ids"].shape[1] :].tolist()
        if device == "cuda":
            torch.cuda.synchronize()
        return outs, time.perf_counter() - t0

    run(2)  # warm-up: lazy imports, kernels
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    single, t_single = run(1)
    batched, t_batched = run(args.batch_size)
    assert batched == single, "batched outputs differ from one-by-one outputs"
    print(
        f"device: {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}, threads {torch.get_num_threads()}"
    )
    print(f"tiny-phi3v, {args.n} images, {args.max_new_tokens} new tokens each, outputs identical")
    print(f"one-by-one : {args.n / t_single:8.1f} samples/s ({t_single:.2f} s)")
    print(f"batch {args.batch_size:<4} : {args.n / t_batched:8.1f} samples/s ({t_batched:.2f} s)")
    print(f"speed-up   : {t_single / t_batched:.1f}x")
    if device == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:.1f} MiB")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
