"""The real-size Phi-3-Vision through the harness's own code paths: speed, memory, bf16, LoRA, export.

Run by scripts/gpu_proof.sh. On a GPU (default) it builds a full-size Phi-3-Vision from the official
config with random bf16 weights (timings and memory do not depend on the values), saves it in the
official checkpoint layout and loads it through the harness's normal loader. ``--tiny`` runs the
same steps on tiny-phi3v on a CPU in a minute (the CI form). Every figure goes to ``--out``/
gpu_proof.json, written after each step so a step that fails (recorded with its error) loses
nothing measured before it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def step(results: dict, name: str, out: Path):
    """Decorator: run a step, record its figures or its error, write the JSON either way."""

    def wrap(fn):
        t0 = time.perf_counter()
        try:
            results[name] = fn()
        except Exception as err:  # noqa: BLE001 - a failed step is recorded, the others still run
            results[name] = {"error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()[-2000:]}
        results[name] = {**results[name], "step_s": round(time.perf_counter() - t0, 2)}
        (out / "gpu_proof.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
        print(f"[{name}] {json.dumps(results[name], default=str)[:400]}", flush=True)
        return fn

    return wrap


def harness(*args: str, env: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "harness.cli", *args]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])}... exit {result.returncode}: {result.stderr[-1500:]}")
    return result


def _ids(config: dict) -> list[str]:
    """The evaluated sample ids, from a run's data manifest (the bare loop takes the same images)."""
    return [s["id"] for s in json.loads(Path(config["data"]["manifest"]).read_text())["samples"]]


def matmul_tflops(device: str) -> float:
    """The card's measured dense bf16 throughput (fp32 on a CPU): the compute limit's denominator."""
    import torch

    n, dtype = (8192, torch.bfloat16) if device.startswith("cuda") else (1024, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t0, reps = time.perf_counter(), 20 if device.startswith("cuda") else 5
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true", help="tiny-phi3v on a CPU: the CI form")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="the full-size code path (official config, bf16 build, save, 800 px images) on a CPU with one "
        "decoder and one CLIP layer: proves the GPU form runs before GPU minutes are spent on it",
    )
    parser.add_argument("--samples", type=int, default=None)
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    tiny, smoke = args.tiny, args.smoke
    # The repo first, then whatever the caller put on the path (wheels carried to a bare GPU machine).
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": pythonpath, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    env.setdefault("HARNESS_CACHE", str(out / "cache"))
    os.environ.update({k: env[k] for k in ("HF_HUB_OFFLINE", "HARNESS_CACHE")})

    import torch

    device = "cpu" if tiny or smoke else "cuda"
    small = tiny or smoke  # a CPU run: few samples, short answers, few steps
    n = args.samples or (2 if smoke else 6 if tiny else 32)
    crops = (4,) if small else (4, 16)
    batches = (1, 2) if smoke else (1, 4) if tiny else (1, 8, 32)
    new_tokens = 4 if smoke else 8 if tiny else 32
    side = 96 if tiny else 800  # "realistic" product shots: the synthetic images upscaled
    results: dict = {
        "mode": "tiny (CPU)" if tiny else "smoke (CPU, 1 layer)" if smoke else "full size (GPU)",
        "samples": n,
        "max_new_tokens": new_tokens,
    }
    model_dir = out / "model"

    @step(results, "environment", out)
    def environment():
        from importlib import metadata

        versions = {}
        for name in (
            "torch",
            "transformers",
            "peft",
            "trl",
            "accelerate",
            "datasets",
            "bitsandbytes",
            "harness",
        ):
            try:
                versions[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                versions[name] = None
        card = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
        return {"card": card, "versions": versions, "peak_tflops": round(matmul_tflops(device), 2)}

    @step(results, "model", out)
    def model():
        from harness.models import resolve

        if tiny:
            path = Path(resolve("tiny-phi3v").path)
            size = sum(f.stat().st_size for f in path.iterdir() if f.is_file()) / 1024**3
            return {"path": str(path), "built_and_saved_s": 0, "size_gb": round(size, 3)}
        from backends.phi3v import Phi3VConfig, Phi3VForCausalLM, Phi3VProcessor
        from backends.phi3v.processing import ASSETS

        official = json.loads((ASSETS / "official-config.json").read_text())
        if smoke:
            official = {**official, "num_hidden_layers": 1, "vision_config": {"num_hidden_layers": 1}}
        config = Phi3VConfig(**{k: v for k, v in official.items() if k != "auto_map"})
        t0 = time.perf_counter()
        torch.set_default_dtype(torch.bfloat16)
        with torch.device(device):
            net = Phi3VForCausalLM(config)
        torch.set_default_dtype(torch.float32)
        parameters = sum(p.numel() for p in net.parameters())
        net.save_pretrained(model_dir, max_shard_size="5GB")
        Phi3VProcessor.from_pretrained(ASSETS, num_crops=16).save_pretrained(model_dir)
        (model_dir / "config.json").write_text(
            json.dumps({**json.loads((model_dir / "config.json").read_text()), "dtype": "bfloat16"}, indent=1)
        )
        del net
        if device == "cuda":
            torch.cuda.empty_cache()
        size = sum(f.stat().st_size for f in model_dir.iterdir()) / 1024**3
        return {"path": str(model_dir), "parameters": parameters,
                "built_and_saved_s": round(time.perf_counter() - t0, 1), "size_gb": round(size, 2)}  # fmt: skip

    path = (results.get("model") or {}).get("path") or str(model_dir)
    catalog = out / "catalog.csv"

    @step(results, "data", out)
    def data():
        import pandas as pd
        from PIL import Image

        from tasks import get_task

        task = get_task()
        train_rows = 8 if small else 240  # enough for the training steps below, in the same file
        samples = task.load("synthetic", "test", limit=n).samples
        samples += task.load("synthetic", "train", limit=train_rows).samples
        samples += task.load("synthetic", "validation", limit=8).samples
        (out / "images").mkdir(exist_ok=True)
        rows = []
        for s in samples:
            target = out / "images" / f"{s.id}.png"
            Image.open(s.image).convert("RGB").resize((side, side), Image.Resampling.BICUBIC).save(target)
            rows.append({"product_code": s.id, "title": s.truth["name"], "category3_code": s.truth["category"],
                         "full_price": s.truth["price"], "image": str(target)})  # fmt: skip
        pd.DataFrame(rows).to_csv(catalog, index=False)
        return {"rows": len(rows), "image_px": side}

    def run(crops_: int, batch: int, tag: str) -> dict:
        run_out = out / "runs" / tag
        harness("run", "--model", path, "--data", str(catalog), "--split", "test", "--limit", str(n), "--num-crops", str(crops_),
                "--batch-size", str(batch), "--max-new-tokens", str(new_tokens), "--min-new-tokens", str(new_tokens),
                "--output-dir", str(run_out), "--fresh", "--device", device, env=env)  # fmt: skip
        (run_dir,) = [p for p in run_out.iterdir() if (p / "metrics.json").is_file()]
        metrics = json.loads((run_dir / "metrics.json").read_text())
        records = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
        gen_s = sum(r["latency_s"] or 0 for r in records)
        return {
            "run_dir": str(run_dir),
            "samples_per_s": round(len(records) / gen_s, 3) if gen_s else None,
            "prompt_tokens_mean": round(sum(r["prompt_tokens"] or 0 for r in records) / len(records), 1),
            "peak_memory_gb": metrics.get("peak_memory_gb"),
            "errors": metrics["n_errors"],
            "batch_size_ran": metrics.get("batch_size"),
            "outputs": {r["id"]: r["output"] for r in records},
        }

    outputs: dict[tuple[int, int], dict[str, str]] = {}  # (crops, batch) -> sample id -> answer

    @step(results, "evaluation", out)
    def evaluation():
        grid = {}
        for c in crops:
            for b in batches:
                try:
                    cell = run(c, b, f"crops{c}-batch{b}")
                    outputs[(c, b)] = cell.pop("outputs")
                except Exception as err:  # noqa: BLE001 - one failed cell (say, out of memory) keeps the rest
                    cell = {"error": f"{type(err).__name__}: {err}"[-1500:]}
                grid[f"crops{c}_batch{b}"] = cell
                # Written after each cell: a run stopped by its time limit keeps the cells it measured.
                (out / "gpu_proof.json").write_text(
                    json.dumps({**results, "evaluation": grid}, indent=1, default=str) + "\n"
                )
        return grid

    @step(results, "bare_loop", out)
    def bare_loop():
        """The same batches through processor + generate alone, and prefill alone (a forward)."""
        from PIL import Image

        from backends import phi3v
        from tasks import get_task

        run_dir = next(cell["run_dir"] for cell in results["evaluation"].values() if "run_dir" in cell)
        ids = json.loads((Path(run_dir) / "config.json").read_text())
        images = [Image.open(out / "images" / f"{i}.png").convert("RGB") for i in _ids(ids)][:n]
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        figures = {}
        for c in crops:
            net, processor = phi3v.load(path, device=device, dtype=dtype, num_crops=c)
            prompt = processor.apply_chat_template(get_task().messages(), add_generation_prompt=True)
            b = batches[-2] if len(batches) > 2 else batches[-1]
            gen_s = prefill_s = 0.0
            flops = 0.0
            decoder = sum(p.numel() for p in net.model.layers.parameters())
            clip = sum(p.numel() for p in net.model.vision_embed_tokens.img_processor.parameters())
            vision_cfg = net.config.vision_config
            patches = (vision_cfg.image_size // vision_cfg.patch_size) ** 2 + 1
            tokens = 0
            for i in range(0, len(images), b):
                chunk = images[i : i + b]
                inputs = processor(
                    text=[prompt] * len(chunk), images=chunk, padding=True, padding_side="left"
                )
                inputs = {
                    k: v.to(device, dtype=dtype if v.is_floating_point() else None) for k, v in inputs.items()
                }
                tokens += int(inputs["attention_mask"].sum())
                crops_used = sum(1 + (h // vision_cfg.image_size) * (w // vision_cfg.image_size)
                                 for h, w in inputs["image_sizes"].tolist())  # fmt: skip
                # Two FLOPs a weight a token: the decoder over every token, CLIP over every crop's patches.
                flops += 2 * (decoder * int(inputs["attention_mask"].sum()) + clip * crops_used * patches)
                with torch.inference_mode():
                    sync(device)
                    t0 = time.perf_counter()
                    net(**inputs, logits_to_keep=1)
                    sync(device)
                    prefill_s += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    net.generate(
                        **inputs, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens
                    )
                    sync(device)
                    gen_s += time.perf_counter() - t0
            peak = results["environment"].get("peak_tflops") or 0
            figures[f"crops{c}_batch{b}"] = {
                "samples_per_s": round(len(images) / gen_s, 3),
                "prefill_tokens_per_s": round(tokens / prefill_s, 1),
                "prefill_ms_per_sample": round(1000 * prefill_s / len(images), 2),
                "prefill_gflop_per_sample": round(flops / len(images) / 1e9, 3),
                "fraction_of_compute_limit": round(flops / prefill_s / 1e12 / peak, 3) if peak else None,
            }
            del net
            if device == "cuda":
                torch.cuda.empty_cache()
        grid = results.get("evaluation", {})
        for key, bare in figures.items():
            if key in grid and grid[key].get("samples_per_s"):
                bare["harness_over_bare"] = round(grid[key]["samples_per_s"] / bare["samples_per_s"], 3)
        return figures

    @step(results, "batch_invariance", out)
    def invariance():
        """Greedy answers of each batch size against batch 1's, at the same num_crops (the grid's runs)."""
        figures = {}
        for (c, b), answers in outputs.items():
            one = outputs.get((c, 1))
            if b == 1 or one is None:
                continue
            differ = sorted(i for i in one if one[i] != answers.get(i))
            figures[f"crops{c}_batch{b}_vs_batch1"] = {"samples": len(one), "differ": len(differ),
                                                      "fraction": round(len(differ) / len(one), 3), "ids": differ[:5]}  # fmt: skip
        return figures

    def train(extra: list[str], tag: str) -> dict:
        lora = out / tag
        t0 = time.perf_counter()
        steps = 1 if smoke else 3 if tiny else 10
        harness("train", "--model", path, "--data", str(catalog), "--max-steps", str(steps), "--batch-size",
                "2" if small else "8", "--grad-accum", "1", "--eval-every", "0", "--n-eval", "2",
                "--output-dir", str(lora), "--overwrite", "--report-to", "none", "--device", device, *extra,
                env=env)  # fmt: skip
        manifest = json.loads((lora / "harness-train.json").read_text())
        m = manifest["metrics"]
        return {"adapter": str(lora), "steps": manifest["steps"], "images_per_s": m.get("samples_per_s"),
                "peak_memory_gb": m.get("peak_memory_gb"), "train_loss": m.get("train_loss"),
                "wall_s": round(time.perf_counter() - t0, 1), "recipe": {k: manifest["hyperparameters"].get(k) for k in
                ("lora_r", "lora_alpha", "bf16", "gradient_checkpointing", "batch_size", "lr")}}  # fmt: skip

    @step(results, "lora", out)
    def lora():
        return train([], "lora")

    @step(results, "qlora", out)
    def qlora():
        if tiny or device != "cuda":
            return {"skipped": "4-bit needs a CUDA GPU and bitsandbytes"}
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            return {"skipped": "bitsandbytes is not installed on this machine"}
        return train(["--qlora"], "qlora")

    @step(results, "export", out)
    def export():
        adapter = results["lora"]["adapter"]
        merged = out / "merged"
        t0 = time.perf_counter()
        harness("export", adapter, "--out", str(merged), "--merge", env=env)
        export_s = time.perf_counter() - t0
        from backends import phi3v

        t0 = time.perf_counter()
        phi3v.load(merged, device=device, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
        size = sum(f.stat().st_size for f in merged.iterdir() if f.is_file()) / 1024**3
        return {
            "export_s": round(export_s, 1),
            "load_s": round(time.perf_counter() - t0, 1),
            "size_gb": round(size, 3),
        }

    print(
        json.dumps({k: v.get("error") for k, v in results.items() if isinstance(v, dict) and v.get("error")})
    )


if __name__ == "__main__":
    main()
