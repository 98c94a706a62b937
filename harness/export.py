"""`harness export`: fold a trained LoRA adapter into its base and write a standalone model directory.

The result loads with plain ``from_pretrained`` (or ``backends.phi3v.load`` for Phi-3-Vision) and no
remote code, so it can be served or shared without peft or harness.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.schema import TRAIN_MANIFEST_FILE
from harness.core.store import write_atomic


def export(model_name_or_dir: str | Path, out_dir: str | Path, merge: bool = True) -> Path:
    """Write base + adapter to ``out_dir``: merged weights (``merge``) or the adapter directory copied as is."""
    from harness.models import resolve

    info = resolve(str(model_name_or_dir))
    if not info.adapter:
        raise HarnessError(
            f"model {str(model_name_or_dir)!r} has no trained adapter to export (train it first)"
        )
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise HarnessError(f"--out {out_dir}: directory exists and is not empty")
    # Written beside the target and renamed into place: an interrupted export leaves no half model.
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    if not merge:
        shutil.copytree(info.adapter, tmp, ignore=shutil.ignore_patterns("checkpoint-*", "wandb"))
    else:
        import torch

        from backends.hf import load_model_and_processor

        # Merged in fp32 on the CPU, then cast once to the checkpoint's own dtype: merging into
        # bf16 weights would round the LoRA delta twice.
        tuned, processor, _ = load_model_and_processor(info, device="cpu", dtype="float32")
        merged = tuned.merge_and_unload()
        merged = merged.to(getattr(torch, _checkpoint_dtype(info.path)))
        if hasattr(merged.config, "auto_map"):  # no pointer back to a repository's remote code
            del merged.config.auto_map
        merged.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    manifest = Path(info.adapter) / TRAIN_MANIFEST_FILE
    if manifest.is_file():  # provenance travels with the export
        data = json.loads(manifest.read_text())
        data["exported"] = {"merged": merge, "adapter": info.adapter}
        write_atomic(tmp / "harness-export.json", json.dumps(data, indent=2) + "\n")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if out_dir.exists():
        out_dir.rmdir()  # empty, checked above
    os.replace(tmp, out_dir)
    return out_dir


def _checkpoint_dtype(base: str) -> str:
    """The dtype the base checkpoint was published in (float32 when it does not say)."""
    from huggingface_hub import hf_hub_download

    try:
        path = (
            Path(base) / "config.json" if Path(base).is_dir() else Path(hf_hub_download(base, "config.json"))
        )
        config = json.loads(path.read_text())
    except Exception:  # noqa: BLE001 - no config to read: keep full precision
        return "float32"
    dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
    return dtype if dtype in ("float32", "bfloat16", "float16") else "float32"
