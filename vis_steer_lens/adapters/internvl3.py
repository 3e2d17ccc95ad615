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


# The test models' tokenizer and chat template (tiny and random released ones): Qwen's turns and
# InternVL's image tokens.
_TINY_SPECIAL = {"pad_token": "<|endoftext|>", "eos_token": "<|im_end|>", "unk_token": "<unk>"}
_TINY_EXTRA = {
    "im_start_token": "<|im_start|>",
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}
_TINY_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<IMG_CONTEXT>\n' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] }}{%- endif -%}"
    "{%- endfor -%}"
    "{{ '<|im_end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)


# ---- The released InternVL3-14B, from the `config.json` of OpenGVLab/InternVL3-14B-hf (the
# transformers-format checkpoint; InternViT-300M-448px-V2_5 and Qwen2.5-14B), written out here,
# rope fields in transformers 5's `rope_parameters` form. Where the file leaves a field to its
# config class, the class default is written out and marked "default". Fields that only seed the
# init (initializer_range, initializer_factor) are left out.
_INTERNVIT_300M = dict(  # "vision_config"
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=[448, 448],
    patch_size=[14, 14],
    norm_type="layer_norm",
    layer_norm_eps=1e-6,
    hidden_act="gelu",
    attention_bias=True,  # InternViT-300M's qkv_bias
    use_qk_norm=False,
    layer_scale_init_value=0.1,
    use_mean_pooling=True,  # no final norm: the projector reads the last block's output
    use_absolute_position_embeddings=True,
    num_channels=3,  # default
)
_QWEN25_14B = dict(  # "text_config"
    model_type="qwen2",
    hidden_size=5120,
    intermediate_size=13824,
    num_hidden_layers=48,
    num_attention_heads=40,
    num_key_value_heads=8,
    hidden_act="silu",
    vocab_size=151_674,  # Qwen2.5's 151,665 ids plus InternVL's 9 added tokens
    max_position_embeddings=32768,
    rms_norm_eps=1e-5,  # Qwen2.5-14B's (the base model InternVL3-14B starts from); recalled, not re-read
    rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
    use_sliding_window=False,
    tie_word_embeddings=False,
    bos_token_id=151_643,
    eos_token_id=151_645,
)

#: InternVL3-14B as released (OpenGVLab/InternVL3-14B-hf), for :func:`vis_steer_lens.testing.random_vlm`.
INTERNVL3_RELEASED_CONFIGS = {
    "internvl3-14b": dict(
        vision_config=_INTERNVIT_300M,
        text_config=_QWEN25_14B,
        image_token_id=151_667,
        image_seq_length=256,
        downsample_ratio=0.5,
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    ),
}

#: The released InternVL3 tokenizer's special tokens (Qwen2.5's turns, InternVL's image tokens) and
#: their ids; ``<unk>`` and ``<video>`` have none there and take free ids.
INTERNVL3_TOKEN_IDS = {
    "<|endoftext|>": 151_643,
    "<|im_start|>": 151_644,
    "<|im_end|>": 151_645,
    "<img>": 151_665,
    "</img>": 151_666,
    "<IMG_CONTEXT>": 151_667,
}


@functools.cache
def _image_only_processor_class() -> type:
    from transformers import InternVLProcessor

    class ImageOnlyInternVLProcessor(InternVLProcessor):
        """InternVL's processor without its video processor (which needs torchvision)."""

        def __init__(
            self, image_processor=None, tokenizer=None, image_seq_length: int = 256, chat_template=None
        ):
            super().__init__(image_processor, tokenizer, None, image_seq_length, chat_template)

    return ImageOnlyInternVLProcessor


def _processor(tokenizer: Any, image_size: int, image_seq_length: int, crop_to_patches: bool) -> Any:
    """InternVL's processor over ``tokenizer`` without its video processor (which needs
    torchvision): ImageNet normalisation, ``image_size`` tiles (``crop_to_patches`` cuts larger
    or non-square images into up to 12 of them, as released), ``image_seq_length`` soft tokens
    per tile between ``<img>`` and ``</img>``."""
    from transformers import GotOcr2ImageProcessor

    image_processor = GotOcr2ImageProcessor(
        size={"height": image_size, "width": image_size},
        crop_to_patches=crop_to_patches,
        min_patches=1,
        max_patches=12,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    return _image_only_processor_class()(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_length=image_seq_length,
        chat_template=_TINY_CHAT_TEMPLATE,
    )


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
    released_configs: ClassVar[dict] = INTERNVL3_RELEASED_CONFIGS
    test_tokens: ClassVar[tuple] = (_TINY_SPECIAL, _TINY_EXTRA, _TINY_CHAT_TEMPLATE, False)
    released_token_ids: ClassVar[dict] = INTERNVL3_TOKEN_IDS

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
        return _image_only_processor_class()(
            image_processor=GotOcr2ImageProcessor.from_pretrained(name_or_path, revision=revision),
            tokenizer=tokenizer,
            image_seq_length=AutoConfig.from_pretrained(name_or_path, revision=revision).image_seq_length,
            chat_template=tokenizer.chat_template,
        )

    # ---- test models
    def build_tiny(
        self,
        *,
        vision_layers: int,
        text_width: int,
        norm_type: str = "layer_norm",
        qk_norm: bool = False,
        **options,
    ) -> tuple[nn.Module, Any]:
        """See :meth:`VLMAdapter.build_tiny`; ``norm_type`` and ``qk_norm`` are InternViT's options."""
        from transformers import InternVLConfig, InternVLForConditionalGeneration

        from vis_steer_lens.testing import word_tokenizer

        tokenizer = word_tokenizer(*self.test_tokens)
        config = InternVLConfig(
            vision_config=dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=vision_layers,
                num_attention_heads=4,
                image_size=32,
                patch_size=8,
                norm_type=norm_type,
                use_qk_norm=qk_norm,
                hidden_act="gelu",
            ),
            text_config=dict(
                model_type="qwen2",
                hidden_size=text_width,
                intermediate_size=2 * text_width,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                vocab_size=len(tokenizer),
                max_position_embeddings=256,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                tie_word_embeddings=False,
            ),
            image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
            image_seq_length=4,
            downsample_ratio=0.5,
            tie_word_embeddings=False,
        )
        model = InternVLForConditionalGeneration(config)
        _strengthen_projector(model)
        return model, _processor(tokenizer, image_size=32, image_seq_length=4, crop_to_patches=False)

    def _released_model_config(self, fields: dict, ids: dict, tokenizer: Any) -> tuple[Any, Any]:
        from transformers import InternVLConfig

        fields["text_config"].update(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"])
        fields["image_token_id"] = ids["<IMG_CONTEXT>"]
        image_size = fields["vision_config"]["image_size"][0]
        processor = _processor(tokenizer, image_size, fields["image_seq_length"], crop_to_patches=True)
        return InternVLConfig(**fields), processor

    def _finish_random(self, model: nn.Module) -> None:
        _strengthen_projector(model)


def _strengthen_projector(model: nn.Module) -> None:
    """Redraw the projector's linear weights at unit gain: transformers' init (std 0.02) makes image
    tokens too faint for a random language model to answer differently per image."""
    projector = model.model.multi_modal_projector
    with torch.no_grad():
        for linear in (projector.linear_1, projector.linear_2):
            linear.weight.normal_(std=linear.in_features**-0.5)
