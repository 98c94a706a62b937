"""`harness export`: fold a trained LoRA adapter into its base and write a standalone model directory.

The result loads with plain ``from_pretrained`` (or ``backends.phi3v.load`` for Phi-3-Vision) and no
remote code, so it can be served or shared without peft or harness.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from harness.errors import HarnessError
from harness.schema import TRAIN_MANIFEST_FILE


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
        from backends.hf import load_model_and_processor

        # fp32 on the CPU: merging in bf16 would round the LoRA delta into the base weights twice.
        model, processor, _ = load_model_and_processor(
            info, device="cpu", dtype="float32", load_adapter=False
        )
        from peft import PeftModel

        merged = PeftModel.from_pretrained(model, info.adapter).merge_and_unload()
        if hasattr(merged.config, "auto_map"):  # no pointer back to a repository's remote code
            del merged.config.auto_map
        merged.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    manifest = Path(info.adapter) / TRAIN_MANIFEST_FILE
    if manifest.is_file():  # provenance travels with the export
        data = json.loads(manifest.read_text())
        data["exported"] = {"merged": merge, "adapter": info.adapter}
        (tmp / "harness-export.json").write_text(json.dumps(data, indent=2) + "\n")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if out_dir.exists():
        out_dir.rmdir()  # empty, checked above
    os.replace(tmp, out_dir)
    return out_dir
