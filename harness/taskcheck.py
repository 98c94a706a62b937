"""`harness task check FILE`: validate a task config and show its first rows as the model sees them."""

from __future__ import annotations

import typer


def check_task(name_or_file: str, *, data: str | None = None, rows: int = 3) -> bool:
    """Print the task's definition and first rows: question, target, the parsed target (= the fields).

    Raises TaskConfigError listing every problem of the config, HarnessError for its data (e.g. a
    column the table lacks). Returns whether every shown target parses back to its own fields.
    Plain lines, not a table: targets are copied from here into prompts and bug reports.
    """
    from tasks import get_task
    from tasks.config import PROMPTS

    task = get_task(name_or_file)
    typer.echo(f"{task.name} ({task.source}): {task.description}")
    for f in task.fields:
        typer.echo(f"  field {f.name}: {f.kind}, column {f.column!r}, labels {', '.join(f.labels)}")
    for prompt in PROMPTS:
        typer.echo(f"  prompt {prompt}: {get_task(name_or_file, prompt=prompt).question()}")
    typer.echo(f"first rows of {data or task.default_source()}:")
    all_ok = True
    for index, truth in task.preview(data, rows):
        if isinstance(truth, str):
            typer.echo(f"  row {index}: excluded: {truth}")
            continue
        target = task._render(truth)
        parsed = task.parse(target)
        ok = parsed == truth
        all_ok &= ok
        typer.echo(f"  row {index}: target: {target}")
        typer.echo(f"         parsed: {parsed} ({'ok' if ok else 'DIFFERS from the row: check the labels'})")
    return all_ok


def check_images(name_or_file: str, model: str, *, data: str | None = None, rows: int = 3,
                 batch_size: int = 8, max_image_tokens: int | None = None, max_new_tokens: int = 64) -> None:  # fmt: skip
    """Print what the first rows' images become for ``model`` (processor only, no weights): image and
    prompt tokens per sample at the family's settings (or ``max_image_tokens``'s), and the memory a
    batch would take (weights + KV cache), before a run spends GPU time."""
    from PIL import Image

    from backends.chat import count_image_tokens
    from backends.hf import load_processor
    from harness.models import resolve
    from tasks import get_task

    info = resolve(model).model_copy(update={"max_image_tokens": max_image_tokens})
    processor = load_processor(info)
    task = get_task(name_or_file)
    samples = task.load(data, "test", limit=rows).samples
    render = processor.apply_chat_template
    longest = 0
    for sample in samples:
        with Image.open(sample.image) as image:
            image_tokens = count_image_tokens(processor, image.convert("RGB"))
            size = image.size
        prompt = render(task.messages(), add_generation_prompt=True, tokenize=False)
        text_tokens = len(processor.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        longest = max(longest, image_tokens + text_tokens)
        typer.echo(f"  {sample.id}: image {size[0]}x{size[1]} px -> {image_tokens} image tokens, ~{image_tokens + text_tokens} prompt tokens")  # fmt: skip
    memory = estimate_memory_gb(info.path, batch_size * (longest + max_new_tokens))
    if memory:
        typer.echo(f"  batch {batch_size}: ~{memory[0]:.1f} GB weights + ~{memory[1]:.1f} GB KV cache (bf16, longest prompt + {max_new_tokens} new tokens)")  # fmt: skip


def estimate_memory_gb(path: str, tokens: int) -> tuple[float, float] | None:
    """(weights, KV cache for ``tokens``) in GB from a local model's config and checkpoint files;
    None for a hub id not on disk (nothing is downloaded for an estimate)."""
    import json
    from pathlib import Path

    directory = Path(path)
    if not (directory / "config.json").is_file():
        return None
    config = json.loads((directory / "config.json").read_text())
    text = config.get("text_config") or config
    layers, heads = text.get("num_hidden_layers"), text.get("num_attention_heads")
    if not layers or not heads:
        return None
    head_dim = text.get("head_dim") or text["hidden_size"] // heads
    kv = 2 * layers * (text.get("num_key_value_heads") or heads) * head_dim * 2 * tokens
    weights = sum(f.stat().st_size for f in directory.glob("*.safetensors"))
    return weights / 1024**3, kv / 1024**3
