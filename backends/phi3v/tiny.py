"""tiny-phi3v: the Phi-3-Vision architecture at toy size, random weights, real Phi-3 tokenizer.

Written with the same save_pretrained layout as a real checkpoint and loaded back with the same code,
so tests exercise the real loading path in a few seconds.
"""

from __future__ import annotations

from pathlib import Path

MARKER = ".tiny-phi3v-complete"
SEED = 0

# Official layout (top-level Phi-3 text keys, "su" LongRoPE, img_processor/embd_layer), tiny sizes.
# head_dim 32 -> 16 rope factors: every 3rd factor of the real model's 48. Sized so that a short CPU
# fine-tune learns the synthetic catalog (at hidden 64 / vision 32 it barely learned the categories).
TINY_CONFIG = {
    "architectures": ["Phi3VForCausalLM"],
    "model_type": "phi3_v",
    "vocab_size": 32064,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-5,
    "max_position_embeddings": 131072,
    "original_max_position_embeddings": 4096,
    "rope_theta": 10000.0,
    "rope_scaling": {
        "type": "su",
        "short_factor": [1.05, 1.1, 1.25, 1.45, 1.9, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.1, 2.35, 2.4, 2.7, 3.05],
        "long_factor": [
            1.03,
            1.08,
            1.3,
            1.65,
            3.69,
            5.49,
            15.66,
            18.36,
            30.01,
            35.56,
            56.2,
            59.77,
            61.96,
            63.48,
            63.85,
            64.8,
        ],
    },
    "sliding_window": 131072,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 32000,
    "tie_word_embeddings": False,
    "img_processor": {"name": "clip_vision_model", "num_img_tokens": 4, "image_dim_out": 64},
    "embd_layer": {"embedding_cls": "image", "hd_transform_order": "sub_glb", "use_hd_transform": True},
    "vision_config": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "patch_size": 8,
        "image_size": 32,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": 64,
    },
}
TINY_NUM_CROPS = 4


def build_tiny_phi3v(path: Path) -> Path:
    """Build tiny-phi3v into `path` unless a complete build is there; returns `path`."""
    path = Path(path)
    if (path / MARKER).exists():
        return path
    import torch

    from backends.tiny import save_built, write_recipe

    from .configuration import Phi3VConfig
    from .modeling import Phi3VForCausalLM
    from .processing import Phi3VProcessor, set_generation_tokens

    config = Phi3VConfig(**TINY_CONFIG)
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        model = Phi3VForCausalLM(config).eval()
    set_generation_tokens(model)
    model.generation_config.bos_token_id = 1
    processor = Phi3VProcessor.from_pretrained(
        num_crops=TINY_NUM_CROPS,
        num_img_tokens=config.tokens_per_side**2,
        crop_size=config.vision_config.image_size,
    )

    def save(directory: Path) -> None:
        model.save_pretrained(directory)
        processor.save_pretrained(directory)
        write_recipe(directory)  # the tiny models' training recipe (backends/tiny.py)

    return save_built(path, save, MARKER)
