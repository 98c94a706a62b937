"""Training throughput (samples/s) of `backends.trl.train` on the tiny models, synthetic catalog.

    PYTHONPATH=. python benchmarks/bench_train.py [--steps 30] [--models tiny tiny-phi3v] [--threads 1]

Measures whole optimizer steps through SFTTrainer (collation with the processor, LoRA forward and
backward, AdamW), without the generation callback. Prints one line per model and batch size.
"""

from __future__ import annotations

import argparse
import tempfile
import time


def bench(model_name: str, steps: int, batch_size: int) -> dict:
    from backends.hf import load_model_and_processor
    from backends.trl import Example, count_params, default_params, read_recipe, train
    from harness.models import resolve
    from tasks import get_task

    task = get_task("burberry")
    samples = task.load("synthetic", "train").samples
    examples = [Example(s.id, task.messages(s), task.target(s), s.image) for s in samples]
    info = resolve(model_name)
    model, processor, device = load_model_and_processor(info, "cpu", load_adapter=False)
    n_params = count_params(model)  # before peft wraps it (modules_to_save adds copies)
    params = default_params(
        model, device, read_recipe(info.path)
    )  # the model's own recipe, as `harness train`
    params.max_steps, params.batch_size, params.grad_accum = steps, batch_size, 1
    params.eval_every, params.n_eval, params.save_steps = 0, 0, 10**9
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = train(model, processor, examples, [], output_dir=out, params=params, quiet=True)
        wall = time.perf_counter() - start
    return {
        "model": model_name,
        "params_M": n_params / 1e6,
        "batch": batch_size,
        "steps": result.steps,
        "trainer_samples_per_s": result.samples_per_s,
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--models", nargs="+", default=["tiny", "tiny-phi3v"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}")
    for name in args.models:
        for batch in args.batch_sizes:
            r = bench(name, args.steps, batch)
            print(
                f"{r['model']:<11} {r['params_M']:6.2f}M params  batch {r['batch']:>2}  {r['steps']} steps  "
                f"{r['trainer_samples_per_s']:7.1f} samples/s  (wall {r['wall_s']:.1f} s incl. setup)"
            )


if __name__ == "__main__":
    main()
