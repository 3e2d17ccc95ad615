"""Gemma 3 (``Gemma3ForConditionalGeneration``): a SigLIP tower, an average-pooling projector, Gemma 3 text."""

from __future__ import annotations

from typing import Any, ClassVar

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

#: SigLIP inside Gemma 3, in Hugging Face module paths and TransformerLens TransformerBridge names.
GEMMA3_HOOK_NAMES = HookNameMap(
    hf_prefix="model.vision_tower.",
    hf_block="encoder.layers.{layer}",
    hf_block_sites={
        "attn.hook_q": "self_attn.q_proj",
        "attn.hook_k": "self_attn.k_proj",
        "attn.hook_v": "self_attn.v_proj",
        "hook_attn_out": "self_attn",
        "mlp.hook_pre": "mlp.fc1",
        "hook_mlp_out": "mlp",
        "hook_resid_post": "",
    },
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


# The test models' tokenizer and chat template (tiny and random released ones): Gemma 3's special
# tokens and turn structure.
_TINY_SPECIAL = {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>", "unk_token": "<unk>"}
_TINY_EXTRA = {
    "start_of_turn_token": "<start_of_turn>",
    "end_of_turn_token": "<end_of_turn>",
    "boi_token": "<start_of_image>",
    "eoi_token": "<end_of_image>",
    "image_token": "<image_soft_token>",
}
_TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' }}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


# ---- The released models, from the `config.json` of google/gemma-3-{4b,12b,27b}-it (transformers
# 4.50 layout, written out here; rope fields in transformers 5's `rope_parameters` form). Where a
# file leaves a field to its config class, the class default the release was made with is written
# out and marked "default". Fields that only seed the init (initializer_range) are left out.
_SIGLIP_896 = dict(  # "vision_config": the same SigLIP (So400m/14 at 896 px) in all three sizes
    hidden_size=1152,
    intermediate_size=4304,
    num_hidden_layers=27,
    num_attention_heads=16,
    image_size=896,
    patch_size=14,
    vision_use_head=False,
    hidden_act="gelu_pytorch_tanh",  # default
    layer_norm_eps=1e-6,  # default
    num_channels=3,  # default
)


def _gemma3_text(**sizes: Any) -> dict[str, Any]:
    """A released "text_config": the fields the three sizes share, then each size's own."""
    shared = dict(
        vocab_size=262_208,  # default: 262,144 tokenizer ids (the image token last) plus 64 spare rows
        num_attention_heads=8,  # default (4b)
        num_key_value_heads=4,  # default (4b)
        head_dim=256,  # default (4b, 12b)
        query_pre_attn_scalar=256,  # default (4b, 12b)
        sliding_window=1024,
        # "rope_scaling": {"rope_type": "linear", "factor": 8.0} on the global layers; rope_theta
        # 1e6 (global) and rope_local_base_freq 1e4 (sliding) are defaults.
        rope_parameters={
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        },
        hidden_activation="gelu_pytorch_tanh",  # default
        rms_norm_eps=1e-6,  # default
        max_position_embeddings=131_072,  # default
        final_logit_softcapping=None,  # default (Gemma 2's soft-capping is gone)
        attn_logit_softcapping=None,  # default
        tie_word_embeddings=True,  # default
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )  # layer_types: the default sliding pattern (every 6th layer global), as released
    return {**shared, **sizes}


_GEMMA3_TOP = dict(
    mm_tokens_per_image=256, image_token_index=262_144, boi_token_index=255_999, eoi_token_index=256_000
)

#: Gemma 3 4B/12B/27B as released (google/gemma-3-*-it config.json), for :func:`vis_steer_lens.testing.random_vlm`.
GEMMA3_RELEASED_CONFIGS = {
    "gemma-3-4b": dict(
        vision_config=_SIGLIP_896,
        text_config=_gemma3_text(hidden_size=2560, intermediate_size=10240, num_hidden_layers=34),
        **_GEMMA3_TOP,
    ),
    "gemma-3-12b": dict(
        vision_config=_SIGLIP_896,
        text_config=_gemma3_text(
            hidden_size=3840,
            intermediate_size=15360,
            num_hidden_layers=48,
            num_attention_heads=16,
            num_key_value_heads=8,
        ),
        **_GEMMA3_TOP,
    ),
    "gemma-3-27b": dict(
        vision_config=_SIGLIP_896,
        text_config=_gemma3_text(
            hidden_size=5376,
            intermediate_size=21504,
            num_hidden_layers=62,
            num_attention_heads=32,
            num_key_value_heads=16,
            head_dim=128,
            query_pre_attn_scalar=168,  # hidden_size / num_attention_heads, not head_dim
        ),
        **_GEMMA3_TOP,
    ),
}

#: The released Gemma 3 tokenizer's special tokens and their ids.
GEMMA3_TOKEN_IDS = {
    "<pad>": 0,
    "<eos>": 1,
    "<bos>": 2,
    "<unk>": 3,
    "<start_of_turn>": 105,
    "<end_of_turn>": 106,
    "<start_of_image>": 255_999,
    "<end_of_image>": 256_000,
    "<image_soft_token>": 262_144,
}


def _processor(tokenizer: Any, image_size: int, image_seq_length: int) -> Any:
    """Gemma 3's processor over ``tokenizer``: square images resized bilinearly, normalised to
    [-1, 1], no pan and scan; each image becomes ``image_seq_length`` soft tokens between
    ``<start_of_image>`` and ``<end_of_image>``."""
    from transformers import Gemma3ImageProcessor, Gemma3Processor

    image_processor = Gemma3ImageProcessor(
        size={"height": image_size, "width": image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_pan_and_scan=False,
    )
    return Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=_TINY_CHAT_TEMPLATE,
        image_seq_length=image_seq_length,
    )


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
    released_configs: ClassVar[dict] = GEMMA3_RELEASED_CONFIGS
    test_tokens: ClassVar[tuple] = (_TINY_SPECIAL, _TINY_EXTRA, _TINY_CHAT_TEMPLATE, True)
    released_token_ids: ClassVar[dict] = GEMMA3_TOKEN_IDS

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
        blocks = [
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
            for layer in tower.encoder.layers
        ]
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

    # ---- test models
    def build_tiny(self, *, vision_layers: int, text_width: int, **options) -> tuple[nn.Module, Any]:
        from transformers import Gemma3Config, Gemma3ForConditionalGeneration

        from vis_steer_lens.testing import word_tokenizer

        tokenizer = word_tokenizer(*self.test_tokens)
        ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in _TINY_EXTRA.items()}
        config = Gemma3Config(
            vision_config=dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=vision_layers,
                num_attention_heads=4,
                image_size=32,
                patch_size=8,
                vision_use_head=False,
            ),
            text_config=dict(
                hidden_size=text_width,
                intermediate_size=2 * text_width,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=8,
                vocab_size=len(tokenizer),
                max_position_embeddings=256,
                sliding_window=64,
                pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
            ),
            mm_tokens_per_image=4,
            image_token_index=ids["image_token"],
            boi_token_index=ids["boi_token"],
            eoi_token_index=ids["eoi_token"],
        )
        model = Gemma3ForConditionalGeneration(config)
        return model, _processor(tokenizer, image_size=32, image_seq_length=4)

    def _released_model_config(self, fields: dict, ids: dict, tokenizer: Any) -> tuple[Any, Any]:
        from transformers import Gemma3Config

        fields["text_config"].update(
            pad_token_id=ids["<pad>"], eos_token_id=ids["<eos>"], bos_token_id=ids["<bos>"]
        )
        fields.update(
            image_token_index=ids["<image_soft_token>"],
            boi_token_index=ids["<start_of_image>"],
            eoi_token_index=ids["<end_of_image>"],
        )
        processor = _processor(
            tokenizer, fields["vision_config"]["image_size"], fields["mm_tokens_per_image"]
        )
        return Gemma3Config(**fields), processor

    def _finish_random(self, model: nn.Module) -> None:
        # transformers initialises the projection to zero (every image would read as the same soft
        # tokens); drawn at unit gain instead. And with tied embeddings at transformers' std (0.02,
        # times Gemma's sqrt(hidden) input scale) the last token's own embedding dominates the
        # logits, so a random Gemma repeats its input whatever the image; drawn 20x smaller, the
        # attention over the image decides the answer.
        weight = model.model.multi_modal_projector.mm_input_projection_weight
        with torch.no_grad():
            weight.normal_(std=weight.shape[0] ** -0.5)
            model.get_input_embeddings().weight.normal_(std=0.001)

    def _finish_tower(self, tower: nn.Module) -> nn.Module:
        n_pos = tower.embeddings.position_embedding.num_embeddings
        tower.embeddings.position_ids = torch.arange(n_pos).expand((1, -1))  # non-persistent
        return tower
