"""LLaVA-1.5 (``LlavaForConditionalGeneration``): a CLIP tower, a two-layer MLP projector, a Llama
(Vicuna) language model.

CLIP differs from SigLIP in three ways the adapter spells out for HookedViT: a learned class token
before the patches (``n_prefix_tokens=1``), a LayerNorm on the embeddings before the first block
(``pre_layrnorm``, hooked as ``ln_pre``) and quick-GELU MLPs. The language model reads the
penultimate layer (``vision_feature_layer=-2``) with the class token dropped
(``vision_feature_select_strategy="default"``): the last block and the final norm never reach it,
which :meth:`LlavaAdapter.projector_stop_at_layer` states and the steering guard enforces.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from vis_steer_lens.adapters.base import VLMAdapter
from vis_steer_lens.adapters.gemma3 import ENCODER_LAYER_SITES, encoder_block_parts
from vis_steer_lens.hook_names import HookNameMap
from vis_steer_lens.hooked_vit import HookedViTConfig, TowerParts

#: CLIP inside LLaVA, in Hugging Face module paths. transformer-lens 3.9 has no TransformerBridge for
#: LLaVA's vision tower, so there are no Bridge names.
LLAVA_HOOK_NAMES = HookNameMap(
    hf_prefix="model.vision_tower.",
    hf_block="encoder.layers.{layer}",
    hf_block_sites=ENCODER_LAYER_SITES,
    hf_other={"hook_pos_embed": "embeddings.position_embedding"},
    hf_extra_prefixes=("vision_tower.",),
    bridge_note="transformer-lens 3.9 has no TransformerBridge for LLaVA's vision tower",
)


class LlavaProjector(nn.Module):
    """The class token dropped (strategy ``"default"``), then LLaVA's MLP projector:
    ``[batch, 1 + patches, d_vision]`` → ``[batch, patches, d_lm]``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.multi_modal_projector = model.model.multi_modal_projector
        self.drop_prefix = model.config.vision_feature_select_strategy == "default"

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.drop_prefix:
            features = features[:, 1:]
        return self.multi_modal_projector(features)


def feature_stop_at_layer(layer: int | list[int], n_layers: int) -> int | None:
    """The ``stop_at_layer`` giving Hugging Face's ``hidden_states[layer]`` (``None``: the last one).

    ``hidden_states[0]`` is the first block's input (after CLIP's pre-norm), ``hidden_states[i]`` the
    output of block ``i - 1``; there is no final norm in between for CLIP (its ``post_layernorm``
    acts on the pooled class token only).

    Raises:
        ValueError: For several feature layers (not supported).
    """
    if not isinstance(layer, int):
        raise ValueError(
            f"Several vision feature layers ({layer}) are not supported; expected one int (LLaVA-1.5: -2)."
        )
    index = layer if layer >= 0 else n_layers + 1 + layer
    return None if index == n_layers else index


class LlavaAdapter(VLMAdapter):
    """Adapter for transformers' ``LlavaForConditionalGeneration`` with a CLIP tower (LLaVA-1.5 7B/13B).

    A bare ``CLIPVisionModel`` given to :meth:`HookedViT.from_hf` gets this adapter (no other family
    wraps CLIP).
    """

    name: ClassVar[str] = "llava"
    model_class: ClassVar[str] = "LlavaForConditionalGeneration"
    tower_class: ClassVar[str] = "CLIPVisionModel"
    vision_prefixes: ClassVar[tuple[str, ...]] = ("model.vision_tower.", "vision_tower.")
    # A class token and a norm before the blocks; CLIP's post_layernorm acts on the pooled class
    # token only, not on the last hidden state, so the tower has no final norm here.
    layout: ClassVar[dict] = dict(
        n_prefix_tokens=1, embed_norm_type="LN", final_norm_type=None, act_fn="quick_gelu"
    )
    model_types: ClassVar[tuple[str, ...]] = ("llava",)
    tower_model_types: ClassVar[tuple[str, ...]] = ("clip_vision_model",)
    model_name_markers: ClassVar[tuple[str, ...]] = ("llava-1.5", "llava-v1.5", "llava_1.5", "bakllava")
    hook_name_map: ClassVar[HookNameMap] = LLAVA_HOOK_NAMES
    end_of_turn_tokens: ClassVar[tuple[str, ...]] = ()

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
            n_prefix_tokens=1,
            embed_norm_type="LN",
            final_norm_type=None,
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
            final_norm=None,
            prefix_tokens=embeddings.class_embedding,
            interpolate_pos_encoding=embeddings.interpolate_pos_encoding,
            embed_norm=tower.pre_layrnorm,
        )

    # ---- the whole model
    def tower(self, model: nn.Module) -> nn.Module:
        return model.model.vision_tower

    def projector(self, model: nn.Module) -> nn.Module:
        return LlavaProjector(model)

    def projector_stop_at_layer(self, model: nn.Module, n_layers: int) -> int | None:
        return feature_stop_at_layer(model.config.vision_feature_layer, n_layers)

    def pooled_image_features(self, image_features: torch.Tensor) -> list[torch.Tensor]:
        """LLaVA's ``pooler_output``: one ``[soft_tokens, d_lm]`` tensor per image (it concatenates them)."""
        return list(image_features)

    def reads_prefix_tokens(self, model: nn.Module) -> bool:
        return model.config.vision_feature_select_strategy != "default"

    def _finish_tower(self, tower: nn.Module) -> nn.Module:
        n_pos = tower.embeddings.position_embedding.num_embeddings
        tower.embeddings.position_ids = torch.arange(n_pos).expand((1, -1))  # non-persistent
        return tower
