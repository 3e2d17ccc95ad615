"""InternVL3 (``InternVLForConditionalGeneration``): InternViT with a class token and layer scale,
a pixel-shuffle MLP projector, a Qwen2 language model.

InternViT differs from SigLIP in ways the adapter spells out for HookedViT: a learned class token
before the patches (``n_prefix_tokens=1``), per-channel layer scale ``lambda_1``/``lambda_2`` on
the attention and MLP outputs, RMSNorm or LayerNorm by ``norm_type``, optional q/k norm over all
heads, and no final norm when the projector mean-pools (``use_mean_pooling``). The projector drops
the class token, pixel-shuffles the 2x2 neighbourhoods of patches into one token (a quarter as
many tokens, four times as wide) and maps them with a LayerNorm-MLP.

The adapter loads transformers-format checkpoints (``OpenGVLab/InternVL3-14B-hf``); the
remote-code checkpoints (``OpenGVLab/InternVL3-14B``) use other module names.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import torch
from torch import nn

from vis_steer_lens.adapters.base import VLMAdapter
from vis_steer_lens.hook_names import HookNameMap
from vis_steer_lens.hooked_vit import BlockParts, HookedViTConfig, TowerParts

_NORM_TYPES = {"layer_norm": "LN", "rms_norm": "RMS"}

#: InternViT inside InternVL3, in Hugging Face module paths. transformer-lens 3.9 has no
#: TransformerBridge architecture for InternVL, so there are no Bridge names.
INTERNVL3_HOOK_NAMES = HookNameMap(
    hf_prefix="model.vision_tower.",
    hf_block="encoder.layer.{layer}",
    # Only modules whose output is exactly a HookedViT activation: the attention and MLP
    # modules return their output before layer scale, and q_proj/k_proj before q/k norm.
    hf_block_sites={
        "attn.hook_v": "attention.v_proj",
        "mlp.hook_pre": "mlp.fc1",
        "hook_resid_post": "",
    },
    hf_extra_prefixes=("vision_tower.",),
    bridge_note="transformer-lens 3.9 has no TransformerBridge for InternVL",
)


@functools.cache
def image_only_processor_class() -> type:
    """InternVL's processor class without its video processor (which needs torchvision): what
    :meth:`InternVL3Adapter.load_processor` builds for folders it cannot load otherwise."""
    from transformers import InternVLProcessor

    class ImageOnlyInternVLProcessor(InternVLProcessor):
        """InternVL's processor without its video processor (which needs torchvision)."""

        def __init__(
            self, image_processor=None, tokenizer=None, image_seq_length: int = 256, chat_template=None
        ):
            super().__init__(image_processor, tokenizer, None, image_seq_length, chat_template)

    return ImageOnlyInternVLProcessor


class _PositionEmbedding(nn.Module):
    """Holds InternViT's ``position_embeddings`` ``[1, 1 + patches, d]`` as ``weight`` (shared)."""

    def __init__(self, weight: nn.Parameter):
        super().__init__()
        self.weight = weight


class InternVLProjector(nn.Module):
    """Class token out, pixel shuffle, LayerNorm-MLP: ``[batch, 1 + patches, d]`` → ``[batch, patches / 4, d_lm]``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.multi_modal_projector = model.model.multi_modal_projector
        object.__setattr__(self, "_model", model.model)
        config = model.config
        self.drop_prefix = config.vision_feature_select_strategy == "default"
        self.downsample_ratio = config.downsample_ratio

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.drop_prefix:
            features = features[:, 1:]
        batch, n_patches, width = features.shape
        side = int(n_patches**0.5)
        grid = self._model.pixel_shuffle(features.reshape(batch, side, side, width), self.downsample_ratio)
        return self.multi_modal_projector(grid.reshape(batch, -1, grid.shape[-1]))


class InternVL3Adapter(VLMAdapter):
    """Adapter for transformers' ``InternVLForConditionalGeneration`` (InternVL3 1B-78B, ``-hf`` checkpoints)."""

    name: ClassVar[str] = "internvl3"
    model_class: ClassVar[str] = "InternVLForConditionalGeneration"
    tower_class: ClassVar[str] = "InternVLVisionModel"
    vision_prefixes: ClassVar[tuple[str, ...]] = ("model.vision_tower.", "vision_tower.")
    # A class token, layer scale, and no final norm (InternVL3 mean-pools); hook names follow.
    layout: ClassVar[dict] = dict(n_prefix_tokens=1, final_norm_type=None, layer_scale=True, act_fn="gelu")
    model_types: ClassVar[tuple[str, ...]] = ("internvl",)
    tower_model_types: ClassVar[tuple[str, ...]] = ("internvl_vision",)
    model_name_markers: ClassVar[tuple[str, ...]] = ("internvl",)
    hook_name_map: ClassVar[HookNameMap] = INTERNVL3_HOOK_NAMES
    end_of_turn_tokens: ClassVar[tuple[str, ...]] = ("<|im_end|>",)
    # InternVL's processor cuts large images into 448-px tiles; mining and scoring need one per image.
    one_tile_per_image: ClassVar[dict] = {"crop_to_patches": False}

    # ---- the tower
    def tower_config(self, tower: nn.Module, model_name: str) -> HookedViTConfig:
        cfg = tower.config
        image_size, patch_size = cfg.image_size, cfg.patch_size
        if image_size[0] != image_size[1] or patch_size[0] != patch_size[1]:
            raise ValueError(f"HookedViT takes square images and patches, got {image_size} / {patch_size}.")
        has_final_norm = isinstance(tower.layernorm, nn.LayerNorm)
        return HookedViTConfig(
            n_layers=cfg.num_hidden_layers,
            d_model=cfg.hidden_size,
            n_heads=cfg.num_attention_heads,
            d_head=cfg.hidden_size // cfg.num_attention_heads,
            d_mlp=cfg.intermediate_size,
            image_size=image_size[0],
            patch_size=patch_size[0],
            n_channels=cfg.num_channels,
            layer_norm_eps=cfg.layer_norm_eps,
            n_prefix_tokens=1,
            norm_type=_NORM_TYPES[cfg.norm_type],
            final_norm_type="LN" if has_final_norm else None,
            layer_scale=True,
            qk_norm=bool(cfg.use_qk_norm),
            act_fn=cfg.hidden_act,
            family=self.name,
            model_name=model_name,
            hf_prefix=self.hook_name_map.hf_prefix,
        )

    def tower_parts(self, tower: nn.Module) -> TowerParts:
        if tower.embeddings.position_embeddings is None:
            raise ValueError("InternViT without absolute position embeddings is not supported.")
        blocks = []
        for layer in tower.encoder.layer:
            attention = layer.attention
            qk_norm = isinstance(attention.q_norm, nn.Module) and not isinstance(
                attention.q_norm, nn.Identity
            )
            blocks.append(
                BlockParts(
                    ln1=layer.layernorm_before,
                    ln2=layer.layernorm_after,
                    q=attention.q_proj,
                    k=attention.k_proj,
                    v=attention.v_proj,
                    o=attention.projection_layer,
                    mlp_in=layer.mlp.fc1,
                    mlp_out=layer.mlp.fc2,
                    act_fn=layer.mlp.activation_fn,
                    q_norm=attention.q_norm if qk_norm else None,
                    k_norm=attention.k_norm if qk_norm else None,
                    ls1=layer.lambda_1,
                    ls2=layer.lambda_2,
                    attn_scale=attention.scale,
                )
            )
        embeddings = tower.embeddings
        return TowerParts(
            patch_embed=embeddings.patch_embeddings.projection,
            pos_embed=_PositionEmbedding(embeddings.position_embeddings),
            blocks=blocks,
            final_norm=tower.layernorm if isinstance(tower.layernorm, nn.LayerNorm) else None,
            prefix_tokens=embeddings.cls_token,
            interpolate_pos_encoding=embeddings.interpolate_pos_encoding,
        )

    # ---- the whole model
    def projector(self, model: nn.Module) -> nn.Module:
        return InternVLProjector(model)

    def projector_stop_at_layer(self, model: nn.Module, n_layers: int) -> int | None:
        layer = model.config.vision_feature_layer
        if not isinstance(layer, int):
            raise ValueError(f"Several vision feature layers ({layer}) are not supported.")
        if layer == -1:
            return None  # the last hidden state, after the final norm where there is one
        # hidden_states[0] is the embedding output, hidden_states[i] the output of block i - 1.
        return layer if layer >= 0 else n_layers + 1 + layer

    def reads_prefix_tokens(self, model: nn.Module) -> bool:
        return model.config.vision_feature_select_strategy != "default"

    def tower(self, model: nn.Module) -> nn.Module:
        return model.model.vision_tower

    # ---- loading
    def load_processor(self, name_or_path: str, *, revision: str | None = None) -> Any:
        """InternVL's processor, or where it cannot load (its video processor needs torchvision, and
        folders written by :func:`vis_steer_lens.testing.random_vlm` have none) the same processor
        for images only, from the folder's image processor, tokenizer and ``image_seq_length``."""
        try:
            processor = super().load_processor(name_or_path, revision=revision)
        except (OSError, ImportError, ValueError, TypeError):
            processor = None
        if hasattr(processor, "image_processor"):  # AutoProcessor falls back to a bare tokenizer
            return processor
        from transformers import AutoConfig, AutoTokenizer, GotOcr2ImageProcessor

        tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision)
        return image_only_processor_class()(
            image_processor=GotOcr2ImageProcessor.from_pretrained(name_or_path, revision=revision),
            tokenizer=tokenizer,
            image_seq_length=AutoConfig.from_pretrained(name_or_path, revision=revision).image_seq_length,
            chat_template=tokenizer.chat_template,
        )
