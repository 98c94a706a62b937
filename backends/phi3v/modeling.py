"""Phi3VForCausalLM: transformers' native Phi-3 text model + a CLIP tower + the HD image embedding.

Module names follow the official checkpoint (`model.vision_embed_tokens.img_processor.vision_model.*`,
`glb_GN`, `sub_GN`, `img_projection.{0,2}`), so its safetensors load with no key mapping.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionModel
from transformers import initialization as init
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.phi3.modeling_phi3 import Phi3ForCausalLM, Phi3Model

from .configuration import Phi3VConfig


class Phi3VCLIPVisionModel(CLIPVisionModel):
    """CLIPVisionModel under its own name, so transformers' CLIP key renaming (which drops
    `vision_model.` on load and re-adds it only sometimes on save) leaves the official names alone."""


class CLIPTower(nn.Module):
    """Holds the CLIP model as `vision_model`: the official `img_processor.vision_model.*` key layout."""

    def __init__(self, config):
        super().__init__()
        self.vision_model = Phi3VCLIPVisionModel(config)

    def forward(self, pixel_values, **kwargs):
        return self.vision_model(pixel_values, **kwargs)


def clip_tower(config) -> nn.Module:
    """transformers 5 flattened CLIPVisionModel; 4.x still nests a `vision_model` inside it."""
    tower = CLIPTower(config)
    return tower.vision_model if hasattr(tower.vision_model, "vision_model") else tower


class Phi3VImageEmbedding(nn.Module):
    """Crops -> CLIP second-to-last layer (no CLS, no post-layernorm) -> 2x2 merge -> HD layout -> MLP."""

    def __init__(self, config: Phi3VConfig):
        super().__init__()
        self.img_processor = clip_tower(config.vision_config)
        dim = config.vision_config.hidden_size * 4
        self.crop_size = config.vision_config.image_size
        self.side = config.tokens_per_side
        self.glb_GN = nn.Parameter(torch.zeros(1, 1, dim))
        self.sub_GN = nn.Parameter(torch.zeros(1, 1, 1, dim))
        # Exact (erf) GELU, as in the official projection.
        self.img_projection = nn.Sequential(
            nn.Linear(dim, config.hidden_size), nn.GELU(), nn.Linear(config.hidden_size, config.hidden_size)
        )

    def clip_penultimate(self, crops: torch.Tensor) -> torch.Tensor:
        """(n, 3, S, S) -> (n, 1 + P, D): the CLIP tower's second-to-last layer output, computed directly.

        Not `tower(..., output_hidden_states=True).hidden_states[-2]`: in transformers 5, once a caller has
        passed `output_hidden_states`/`output_attentions` to the whole model, the capture hooks sit on the
        tower twice, the tuple holds every layer twice and [-2] is the last layer. Running embeddings,
        pre-layernorm and all encoder layers but the last also skips the unused last layer and the
        hidden-state tuple (GBs at 16 crops). The last layer stays a module: the checkpoint keys keep it.
        Layers are called as modules, so gradient checkpointing and the attention implementation hold.
        """
        vision = getattr(self.img_processor, "vision_model", self.img_processor)  # both tower layouts
        hidden = vision.pre_layrnorm(vision.embeddings(crops))
        for layer in vision.encoder.layers[:-1]:
            hidden = layer(hidden, None)  # CLIP vision attends everywhere: no mask
        return hidden

    def crop_features(self, crops: torch.Tensor) -> torch.Tensor:
        """(n, 3, S, S) -> (n, side, side, 4*D): 2x2 blocks concatenated (2r,2c),(2r,2c+1),(2r+1,2c),(2r+1,2c+1)."""
        feats = self.clip_penultimate(crops.to(self.glb_GN.dtype))[:, 1:]  # no CLS, no post-layernorm
        n, _, dim = feats.shape
        s = self.side
        feats = feats.reshape(n, s, 2, s, 2, dim).permute(0, 1, 3, 2, 4, 5)
        return feats.reshape(n, s, s, 4 * dim)

    def with_row_separators(self, grid: torch.Tensor) -> torch.Tensor:
        """(rows, cols, C) -> (rows * (cols + 1), C): `sub_GN` after every row."""
        sep = self.sub_GN.reshape(1, 1, -1).expand(grid.shape[0], 1, -1).to(grid.dtype)
        return torch.cat([grid, sep], dim=1).flatten(0, 1)

    def forward(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
        """(n_img, crops+1, 3, S, S), (n_img, 2) -> (n_tokens, hidden), images in order, tokens in order."""
        grids = [(int(h) // self.crop_size, int(w) // self.crop_size) for h, w in image_sizes.tolist()]
        # Unused (zero) crop slots are skipped: the official code computes and then drops them.
        crops = torch.cat([pixel_values[i, : 1 + h * w] for i, (h, w) in enumerate(grids)])
        feats = self.crop_features(crops)
        s = self.side
        pieces, start = [], 0
        for h, w in grids:
            glb, sub = feats[start], feats[start + 1 : start + 1 + h * w]
            start += 1 + h * w
            sub = sub.reshape(h, w, s, s, -1).permute(0, 2, 1, 3, 4).reshape(h * s, w * s, -1)
            glb_gn = self.glb_GN.reshape(1, -1).to(feats.dtype)
            pieces += [self.with_row_separators(sub), glb_gn, self.with_row_separators(glb)]
        return self.img_projection(torch.cat(pieces))


class Phi3VModel(Phi3Model):
    """Phi-3 decoder whose input embeddings carry image features at the image-slot positions."""

    config_class = Phi3VConfig

    def __init__(self, config: Phi3VConfig):
        super().__init__(config)
        self.vision_embed_tokens = Phi3VImageEmbedding(config)
        self.post_init()

    def embed(self, input_ids: torch.Tensor, pixel_values=None, image_sizes=None) -> torch.Tensor:
        """Token embeddings with image slots (negative ids) overwritten, input_ids left untouched."""
        slots = input_ids < 0
        embeds = self.embed_tokens(input_ids.clamp(min=0))
        if not slots.any():
            return embeds
        if pixel_values is None:
            raise ValueError("input_ids hold image slots (negative ids) but no pixel_values were given")
        feats = self.vision_embed_tokens(pixel_values, image_sizes)
        if feats.shape[0] != int(slots.sum()):
            raise ValueError(
                f"input_ids have {int(slots.sum())} image slots but the images give {feats.shape[0]} features"
            )
        return embeds.masked_scatter(slots.unsqueeze(-1), feats.to(embeds.dtype))

    def forward(
        self,
        input_ids=None,
        pixel_values=None,
        image_sizes=None,
        inputs_embeds=None,
        position_ids=None,
        **kwargs,
    ):
        if inputs_embeds is None and input_ids is not None:
            inputs_embeds = self.embed(input_ids, pixel_values, image_sizes)
        mask = kwargs.get("attention_mask")
        if position_ids is None and isinstance(mask, torch.Tensor) and mask.dim() == 2:
            # Positions count real tokens only, so a left-padded row sees the same positions as unpadded
            # (generate passes these itself; a plain forward would otherwise count the pads).
            position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -inputs_embeds.shape[1] :]
        return super().forward(inputs_embeds=inputs_embeds, position_ids=position_ids, **kwargs)


class Phi3VForCausalLM(Phi3ForCausalLM):
    """Phi3ForCausalLM (PreTrainedModel + GenerationMixin) whose inputs may hold image slots."""

    config_class = Phi3VConfig
    _no_split_modules = ["Phi3DecoderLayer", "CLIPEncoderLayer"]

    def __init__(self, config: Phi3VConfig):
        # Skip Phi3ForCausalLM.__init__ (it would build a text-only Phi3Model first).
        super(Phi3ForCausalLM, self).__init__(config)
        self.model = Phi3VModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, Phi3VImageEmbedding):
            init.normal_(module.glb_GN, std=self.config.initializer_range)
            init.normal_(module.sub_GN, std=self.config.initializer_range)

    def prepare_inputs_for_generation(self, input_ids, pixel_values=None, image_sizes=None, **kwargs):
        inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        # Images go wherever this step's ids still hold their slots: the prefill, and the full recompute
        # Phi-3 does when LongRoPE switches to its long factors past 4096 tokens (it drops the cache).
        ids = inputs.get("input_ids")
        if ids is not None and pixel_values is not None and bool((ids < 0).any()):
            inputs["pixel_values"], inputs["image_sizes"] = pixel_values, image_sizes
        return inputs

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Like Phi3ForCausalLM.forward, plus images; positions default to cumsum(attention_mask) - 1."""
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            image_sizes=image_sizes,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep, :])
        loss = None
        if labels is not None:
            # Image slots are negative ids: never targets, whatever the caller's collator did (trl#1802).
            labels = labels.masked_fill(labels < 0, -100)
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs
            )
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


def _register() -> None:
    """Let AutoConfig / AutoModelForCausalLM resolve "phi3_v" natively (no trust_remote_code)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        AutoConfig.register("phi3_v", Phi3VConfig, exist_ok=True)
        AutoModelForCausalLM.register(Phi3VConfig, Phi3VForCausalLM, exist_ok=True)
    except (ValueError, TypeError):  # a transformers that ships its own phi3_v keeps it
        pass


_register()
