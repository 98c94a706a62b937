"""Supervised fine-tuning of an image-text model with TRL's SFTTrainer and a LoRA adapter.

Knows nothing about any task: it gets examples (chat messages, target text, image path) and an
``evaluate(model)`` to judge the model as it trains. Rooms of one job each: ``recipe`` (hyper-
parameters, LoRA targets, a model's own overrides), ``collator`` (examples -> batches),
``callback`` (evaluation during training, compact logs), ``trainer`` (the wiring).
"""

import contextlib
import io

# transformers prints "[INFO] Running in WANDB offline mode" to stdout when its trainer integrations
# load (once per process): not a line a user of the CLI or the library needs.
with contextlib.redirect_stdout(io.StringIO()):
    import transformers.integrations.integration_utils  # noqa: F401 - the module that prints

    from backends.trl.collator import (
        Example,
        VisionSFTCollator,
        answer_frame,
        image_token_ids,
        to_dataset,
    )
    from backends.trl.recipe import TrainParams, count_params, default_params, lora_target_regex, read_recipe
    from backends.trl.trainer import TrainResult, setup_wandb, train

__all__ = [
    "Example",
    "TrainParams",
    "TrainResult",
    "VisionSFTCollator",
    "answer_frame",
    "count_params",
    "default_params",
    "image_token_ids",
    "lora_target_regex",
    "read_recipe",
    "setup_wandb",
    "to_dataset",
    "train",
]
