"""Gemma 3 (``Gemma3ForConditionalGeneration``): a SigLIP tower, an average-pooling projector, Gemma 3 text."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from vis_steer_lens.adapters.base import VLMAdapter
from vis_steer_lens.hook_names import HookNameMap
from vis_steer_lens.hooked_vit import BlockParts, HookedViTConfig, TowerParts

# Key prefixes under which checkpoints store the vision tower: transformers 5 writes
# `vision_tower.`, the released Gemma 3 checkpoints `vision_tower.vision_model.`.
_VISION_PREFIXES = (
    "model.vision_tower.vision_model.",
    "model.vision_tower.",
    "vision_tower.vision_model.",
    "vision_tower.",
)

#: Hook sites inside one SigLIP encoder layer, as Hugging Face module paths; CLIP's layers (LLaVA's
#: tower) have the same modules.
ENCODER_LAYER_SITES = {
    "attn.hook_q": "self_attn.q_proj",
    "attn.hook_k": "self_attn.k_proj",
    "attn.hook_v": "self_attn.v_proj",
    "hook_attn_out": "self_attn",
    "mlp.hook_pre": "mlp.fc1",
    "hook_mlp_out": "mlp",
    "hook_resid_post": "",
}

#: SigLIP inside Gemma 3, in Hugging Face module paths and TransformerLens TransformerBridge names.
GEMMA3_HOOK_NAMES = HookNameMap(
    hf_prefix="model.vision_tower.",
    hf_block="encoder.layers.{layer}",
    hf_block_sites=ENCODER_LAYER_SITES,
    hf_other={"hook_pos_embed": "embeddings.position_embedding"},
    hf_extra_prefixes=("vision_tower.",),
    bridge_block="vision_encoder.encoder_layers.{layer}",
    bridge_block_sites={
        "hook_resid_pre": "hook_in",
        "ln1.hook_scale": "ln1.hook_scale",
        "ln1.hook_normalized": "ln1.hook_normalized",
        "attn.hook_q": "attn.q.hook_out",
        "attn.hook_k": "attn.k.hook_out",
        "attn.hook_v": "attn.v.hook_out",
        "attn.hook_attn_scores": "attn.hook_attn_scores",
        "attn.hook_pattern": "attn.hook_pattern",
        "attn.hook_z": "attn.o.hook_in",
        "hook_attn_out": "attn.hook_out",
        "hook_resid_mid": "ln2.hook_in",
        "ln2.hook_scale": "ln2.hook_scale",
        "ln2.hook_normalized": "ln2.hook_normalized",
        "mlp.hook_pre": "mlp.in.hook_out",
        "mlp.hook_post": "mlp.out.hook_in",
        "hook_mlp_out": "mlp.hook_out",
        "hook_resid_post": "hook_out",
    },
    bridge_other={
        "hook_embed": "vision_encoder.hook_patch_embed",
        "hook_pos_embed": "vision_encoder.hook_pos_embed",
        "ln_final.hook_scale": "vision_encoder.post_layernorm.hook_scale",
        "ln_final.hook_normalized": "vision_encoder.post_layernorm.hook_normalized",
    },
    bridge_aliases={
        # The block input under another name, and patch + position embeddings (the first block's input).
        "vision_encoder.encoder_layers.{layer}.ln1.hook_in": "blocks.{layer}.hook_resid_pre",
        "vision_encoder.embeddings.hook_out": "blocks.0.hook_resid_pre",
    },
)


def encoder_block_parts(layers: nn.ModuleList) -> list[BlockParts]:
    """The parts of SigLIP's encoder layers, which CLIP's share module for module (LLaVA's tower)."""
    return [
        BlockParts(
            ln1=layer.layer_norm1,
            ln2=layer.layer_norm2,
            q=layer.self_attn.q_proj,
            k=layer.self_attn.k_proj,
            v=layer.self_attn.v_proj,
            o=layer.self_attn.out_proj,
            mlp_in=layer.mlp.fc1,
            mlp_out=layer.mlp.fc2,
            act_fn=layer.mlp.activation_fn,
            attn_scale=layer.self_attn.scale,
        )
        for layer in layers
    ]


class Gemma3Adapter(VLMAdapter):
    """Adapter for transformers' ``Gemma3ForConditionalGeneration`` (Gemma 3 4B/12B/27B, MedGemma)."""

    name: ClassVar[str] = "gemma3"
    model_class: ClassVar[str] = "Gemma3ForConditionalGeneration"
    tower_class: ClassVar[str] = "SiglipVisionModel"
    vision_prefixes: ClassVar[tuple[str, ...]] = _VISION_PREFIXES
    model_types: ClassVar[tuple[str, ...]] = ("gemma3",)
    tower_model_types: ClassVar[tuple[str, ...]] = ("siglip_vision_model",)
    model_name_markers: ClassVar[tuple[str, ...]] = ("gemma-3", "gemma3", "medgemma")
    hook_name_map: ClassVar[HookNameMap] = GEMMA3_HOOK_NAMES
    end_of_turn_tokens: ClassVar[tuple[str, ...]] = ("<end_of_turn>",)
    language_input_keys: ClassVar[tuple[str, ...]] = ("input_ids", "attention_mask", "token_type_ids")

    # ---- the tower
    def tower_config(self, tower: nn.Module, model_name: str) -> HookedViTConfig:
        cfg = tower.config
        return HookedViTConfig(
            n_layers=cfg.num_hidden_layers,
            d_model=cfg.hidden_size,
            n_heads=cfg.num_attention_heads,
            d_head=cfg.hidden_size // cfg.num_attention_heads,
            d_mlp=cfg.intermediate_size,
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            n_channels=cfg.num_channels,
            layer_norm_eps=cfg.layer_norm_eps,
            act_fn=cfg.hidden_act,
            family=self.name,
            model_name=model_name,
            hf_prefix=self.hook_name_map.hf_prefix,
        )

    def tower_parts(self, tower: nn.Module) -> TowerParts:
        blocks = encoder_block_parts(tower.encoder.layers)
        embeddings = tower.embeddings
        return TowerParts(
            patch_embed=embeddings.patch_embedding,
            pos_embed=embeddings.position_embedding,
            blocks=blocks,
            final_norm=tower.post_layernorm,
            interpolate_pos_encoding=embeddings.interpolate_pos_encoding,
        )

    # ---- the whole model
    def tower(self, model: nn.Module) -> nn.Module:
        return model.model.vision_tower

    def projector(self, model: nn.Module) -> nn.Module:
        return model.model.multi_modal_projector

    def prefill_masks(self, hf_model: nn.Module, inputs: dict[str, torch.Tensor]) -> dict | None:
        """Gemma 3's prefill masks for unpadded rows, as SDPA boolean masks ``[batch, 1, seq, seq]``.

        Every layer attends causally, and image tokens also see every token of their own image
        (Gemma 3 attends bidirectionally inside an image); sliding-window layers keep, on top,
        only the keys less than ``sliding_window`` positions back. ``None`` (let transformers
        build the masks) unless the text model runs SDPA attention with Gemma 3's layer types.
        Built here in a few tensor ops, where transformers builds them with a per-row vmap.
        """
        token_type_ids = inputs.get("token_type_ids")
        if token_type_ids is None:
            return None
        config = hf_model.config.get_text_config(decoder=True)
        layer_types = set(getattr(config, "layer_types", None) or ())
        if getattr(config, "_attn_implementation", None) != "sdpa" or not layer_types <= {
            "full_attention",
            "sliding_attention",
        }:
            return None
        is_image = token_type_ids == 1
        starts = is_image & ~torch.nn.functional.pad(is_image, (1, 0))[:, :-1]
        block = torch.where(is_image, starts.long().cumsum(-1) - 1, -1)  # [batch, seq], -1 off images
        seq = token_type_ids.shape[1]
        query = torch.arange(seq, device=token_type_ids.device)[:, None]
        key = torch.arange(seq, device=token_type_ids.device)[None, :]
        same_image = (block[:, :, None] == block[:, None, :]) & (block[:, :, None] >= 0)
        full = ((key <= query)[None] | same_image)[:, None]  # [batch, 1, seq, seq]
        masks = {"full_attention": full}
        if "sliding_attention" in layer_types:
            masks["sliding_attention"] = full & (key > query - config.sliding_window)[None, None]
        return masks

    def _finish_tower(self, tower: nn.Module) -> nn.Module:
        n_pos = tower.embeddings.position_embedding.num_embeddings
        tower.embeddings.position_ids = torch.arange(n_pos).expand((1, -1))  # non-persistent
        return tower
