"""What the harness costs beside the model, as whole processes: `harness run` vs a bare loop.

Both processes start cold, load tiny-phi3v, generate greedily for the same 118 synthetic test
images with the same prompt, batch size and token budget, on one thread; the bare loop calls the
processor and `model.generate` and decodes, nothing else. The ratio bare / harness is the share of
the limit the harness keeps (goal >= 0.95). Runs alternate, and the median of each is taken.

    PYTHONPATH=. python benchmarks/bench_overhead.py [--repeats 3] [--max-new-tokens 48]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BARE = """
import json, sys, time
import torch
from PIL import Image
from backends import phi3v

torch.set_num_threads(1)
spec = json.loads(open(sys.argv[1]).read())
model, processor = phi3v.load(spec["model"], device="cpu", dtype=torch.float32)
prompt = processor.apply_chat_template(spec["messages"], add_generation_prompt=True)
outputs = []
for i in range(0, len(spec["images"]), spec["batch"]):
    paths = spec["images"][i : i + spec["batch"]]
    images = [Image.open(p).convert("RGB") for p in paths]
    inputs = processor(text=[prompt] * len(paths), images=images, padding=True, padding_side="left")
    with torch.inference_mode():
        out = model.generate(**inputs, do_sample=False, max_new_tokens=spec["max_new_tokens"])
    outputs += processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
print(len(outputs))
"""


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    env = {**os.environ, "HARNESS_CACHE": str(root / "cache"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    os.environ.update({k: env[k] for k in ("HARNESS_CACHE", "HF_HUB_OFFLINE")})
    from harness.models import resolve
    from tasks import get_task

    task, info = get_task(), resolve("tiny-phi3v")  # built before any timing
    samples = task.load("synthetic", "test").samples
    spec = {
        "model": info.path,
        "messages": task.messages(),
        "images": [s.image for s in samples],
        "batch": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
    }
    (root / "spec.json").write_text(json.dumps(spec))
    (root / "bare.py").write_text(BARE)
    harness_cmd = [
        sys.executable, "-m", "harness.cli", "run", "--model", "tiny-phi3v", "--data", "synthetic",
        "--batch-size", str(args.batch_size), "--max-new-tokens", str(args.max_new_tokens),
        "--output-dir", str(root / "runs"), "--fresh",
    ]  # fmt: skip
    bare_cmd = [sys.executable, str(root / "bare.py"), str(root / "spec.json")]
    timed(harness_cmd, env)  # warm the page cache and the data manifest for both
    bare, ours = [], []
    for _ in range(args.repeats):
        bare.append(timed(bare_cmd, env))
        ours.append(timed(harness_cmd, env))
    b, h = statistics.median(bare), statistics.median(ours)
    print(
        f"{len(samples)} samples, batch {args.batch_size}, max_new_tokens {args.max_new_tokens}, one thread"
    )
    print(f"bare loop process : {b:.2f} s (runs: {', '.join(f'{t:.2f}' for t in bare)})")
    print(f"harness run       : {h:.2f} s (runs: {', '.join(f'{t:.2f}' for t in ours)})")
    print(f"harness keeps {b / h:.3f} of the limit (goal >= 0.95)")


if __name__ == "__main__":
    main()
