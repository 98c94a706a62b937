"""Phi3VConfig: the official Phi-3-Vision config.json read natively (no remote code).

The text model is transformers' own Phi-3, so the text settings stay at the top level exactly as in the
official file; the CLIP tower gets a `vision_config` (ViT-L/14-336 unless overridden, e.g. by a tiny model).
"""

from __future__ import annotations

from transformers import CLIPVisionConfig, PretrainedConfig
from transformers.models.phi3.configuration_phi3 import Phi3Config

# openai/clip-vit-large-patch14-336, the tower named in the official config's `img_processor`.
CLIP_VIT_L_336 = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "patch_size": 14,
    "image_size": 336,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 768,
}

# Keys of the official file that only make sense for its remote code: dropping them keeps
# `from_pretrained` from asking for trust_remote_code or for flash-attn.
_REMOTE_ONLY = ("auto_map", "_attn_implementation")


def _convert_rope(rope: dict | None) -> dict | None:
    """The official "su" scaling is what transformers calls "longrope"; same factors, new name."""
    if not rope:
        return rope
    rope = dict(rope)
    kind = rope.pop("type", None) or rope.get("rope_type")
    rope["rope_type"] = "longrope" if kind in ("su", "longrope") else kind
    return rope


class Phi3VConfig(Phi3Config):
    model_type = "phi3_v"
    sub_configs_defaults = {"vision_config": CLIPVisionConfig}

    vision_config: dict | PretrainedConfig | None = None
    img_processor: dict | None = None
    embd_layer: dict | None = None

    def __post_init__(self, **kwargs):
        for key in _REMOTE_ONLY:
            kwargs.pop(key, None)
        if "rope_scaling" in kwargs:
            kwargs["rope_scaling"] = _convert_rope(kwargs["rope_scaling"])
        elif isinstance(self.rope_parameters, dict):
            self.rope_parameters = _convert_rope(self.rope_parameters)
        if self.vision_config is None or isinstance(self.vision_config, dict):
            # A partial override (a tiny tower, another resolution) keeps the rest of ViT-L/14-336.
            self.vision_config = {**CLIP_VIT_L_336, **(self.vision_config or {})}
        self.img_processor = {
            "name": "clip_vision_model",
            "num_img_tokens": 144,
            **(self.img_processor or {}),
        }
        self.embd_layer = {
            "hd_transform_order": "sub_glb",
            "use_hd_transform": True,
            **(self.embd_layer or {}),
        }
        super().__post_init__(**kwargs)
        if self.embd_layer["hd_transform_order"] != "sub_glb":
            raise ValueError(
                f"embd_layer.hd_transform_order: only 'sub_glb' is supported, got {self.embd_layer}"
            )
        grid = self.vision_config.image_size // self.vision_config.patch_size
        if grid % 2:
            raise ValueError(
                f"vision_config: image_size / patch_size = {grid} must be even for the 2x2 merge"
            )

    @property
    def tokens_per_side(self) -> int:
        """Side of one crop's merged feature grid (12 for ViT-L/14-336)."""
        return self.vision_config.image_size // self.vision_config.patch_size // 2
