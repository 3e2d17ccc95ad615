"""Gemma 3's test models: a tiny random ``Gemma3ForConditionalGeneration`` and the released
4B/12B/27B architectures with random weights (see :mod:`vis_steer_lens.testing`)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from vis_steer_lens.testing.builders import ModelBuilder
from vis_steer_lens.testing.tokenizers import word_tokenizer

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

#: Gemma 3 4B/12B/27B as released (google/gemma-3-*-it config.json), for :func:`~vis_steer_lens.testing.random_vlm`.
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


class Gemma3Builder(ModelBuilder):
    """Builds Gemma 3 test models (the ``gemma3`` adapter's family)."""

    family: ClassVar[str] = "gemma3"
    released_configs: ClassVar[dict] = GEMMA3_RELEASED_CONFIGS
    test_tokens: ClassVar[tuple] = (_TINY_SPECIAL, _TINY_EXTRA, _TINY_CHAT_TEMPLATE, True)
    released_token_ids: ClassVar[dict] = GEMMA3_TOKEN_IDS

    def build_tiny(self, *, vision_layers: int, text_width: int, **options) -> tuple[nn.Module, Any]:
        from transformers import Gemma3Config, Gemma3ForConditionalGeneration

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


#: The builders :mod:`vis_steer_lens.testing` registers from this module, in registration order.
BUILDERS = (Gemma3Builder(),)


__all__ = ["BUILDERS", "GEMMA3_RELEASED_CONFIGS", "GEMMA3_TOKEN_IDS", "Gemma3Builder"]
