"""Qwen2-VL's and Qwen2.5-VL's test models: tiny random ones of each, and the released Qwen2.5-VL
3B/7B architectures with random weights (see :mod:`vis_steer_lens.testing`)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from vis_steer_lens.adapters.qwen2_vl import image_only_processor_class
from vis_steer_lens.testing.builders import ModelBuilder, redraw_linears_at_unit_gain
from vis_steer_lens.testing.tokenizers import word_tokenizer

# The test models' tokenizer and chat template (tiny and random released ones): Qwen's turns and
# image tokens.
_TINY_SPECIAL = {"pad_token": "<|endoftext|>", "eos_token": "<|im_end|>", "unk_token": "<unk>"}
_TINY_EXTRA = {
    "im_start_token": "<|im_start|>",
    "vision_start_token": "<|vision_start|>",
    "vision_end_token": "<|vision_end|>",
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
}
_TINY_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] }}{%- endif -%}"
    "{%- endfor -%}"
    "{{ '<|im_end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)

#: The released Qwen2-VL / Qwen2.5-VL tokenizer's special tokens and their ids.
QWEN2_VL_TOKEN_IDS = {
    "<|endoftext|>": 151_643,
    "<|im_start|>": 151_644,
    "<|im_end|>": 151_645,
    "<|vision_start|>": 151_652,
    "<|vision_end|>": 151_653,
    "<|image_pad|>": 151_655,
    "<|video_pad|>": 151_656,
}

_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# ---- The released Qwen2.5-VL 3B and 7B (Qwen/Qwen2.5-VL-3B-Instruct, -7B-Instruct), from their
# `config.json` (no network at run time; checked against a stored copy of the 3B config.json and a
# printed 7B module tree: widths, depths, heads, key-value heads, vocabulary, special-token ids),
# rope fields in transformers 5's `rope_parameters` form. Fields that only seed the init are left out.
_QWEN25_VIT = dict(  # "vision_config" of both (out_hidden_size differs)
    depth=32,
    hidden_size=1280,
    intermediate_size=3420,
    num_heads=16,
    in_channels=3,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    window_size=112,
    fullatt_block_indexes=[7, 15, 23, 31],
    tokens_per_second=2,
    hidden_act="silu",
)
_MROPE = {"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1_000_000.0}
QWEN25_VL_RELEASED_CONFIGS = {
    "qwen2.5-vl-7b": dict(
        vision_config={**_QWEN25_VIT, "out_hidden_size": 3584},
        text_config=dict(
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            hidden_act="silu",
            vocab_size=152_064,
            max_position_embeddings=128_000,
            rms_norm_eps=1e-6,
            rope_parameters=_MROPE,
            use_sliding_window=False,
            tie_word_embeddings=False,
        ),
        tie_word_embeddings=False,
    ),
    "qwen2.5-vl-3b": dict(
        vision_config={**_QWEN25_VIT, "out_hidden_size": 2048},
        text_config=dict(
            hidden_size=2048,
            intermediate_size=11008,
            num_hidden_layers=36,
            num_attention_heads=16,
            num_key_value_heads=2,
            hidden_act="silu",
            vocab_size=151_936,
            max_position_embeddings=128_000,
            rms_norm_eps=1e-6,
            rope_parameters=_MROPE,
            use_sliding_window=False,
            tie_word_embeddings=True,
        ),
        tie_word_embeddings=True,
    ),
}

#: The released processors' pixel bounds (``preprocessor_config.json``: min_pixels, max_pixels).
RELEASED_MIN_PIXELS = 56 * 56
RELEASED_MAX_PIXELS = 28 * 28 * 16384


def _processor(
    processor_class_name: str,
    tokenizer: Any,
    patch_size: int,
    merge_size: int,
    temporal_patch_size: int,
    min_pixels: int,
    max_pixels: int,
) -> Any:
    """Qwen's processor for images only over ``tokenizer`` (PIL image processor, CLIP normalisation):
    each image resized to multiples of ``patch_size * merge_size`` with its pixel count in
    ``[min_pixels, max_pixels]``."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    image_processor = Qwen2VLImageProcessorPil(
        patch_size=patch_size,
        temporal_patch_size=temporal_patch_size,
        merge_size=merge_size,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        image_mean=_CLIP_MEAN,
        image_std=_CLIP_STD,
    )
    return image_only_processor_class(processor_class_name)(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=_TINY_CHAT_TEMPLATE
    )


class Qwen2VLBuilder(ModelBuilder):
    """Builds Qwen2-VL test models (the ``qwen2_vl`` adapter's family; no released configs)."""

    family: ClassVar[str] = "qwen2_vl"
    test_tokens: ClassVar[tuple] = (_TINY_SPECIAL, _TINY_EXTRA, _TINY_CHAT_TEMPLATE, False)
    released_token_ids: ClassVar[dict] = QWEN2_VL_TOKEN_IDS

    def _tiny_vision_config(self, vision_layers: int, text_width: int) -> dict[str, Any]:
        return dict(
            depth=vision_layers,
            embed_dim=32,
            hidden_size=text_width,
            mlp_ratio=2,
            num_heads=4,
            in_channels=3,
            patch_size=8,
            spatial_merge_size=2,
            temporal_patch_size=2,
            hidden_act="quick_gelu",
        )

    def build_tiny(self, *, vision_layers: int, text_width: int, **options: Any) -> tuple[nn.Module, Any]:
        """See :meth:`ModelBuilder.build_tiny`: 8-px patches merged 2 x 2, images of 32x32 to 64x64
        pixels (4 to 16 soft tokens) at their own aspect ratio, a Qwen2 text model with M-RoPE."""
        import transformers

        tokenizer = word_tokenizer(*self.test_tokens)
        head = text_width // 4
        quarter = head // 2 // 4
        config_class = getattr(
            transformers, self.adapter.model_class.replace("ForConditionalGeneration", "Config")
        )
        config = config_class(
            vision_config=self._tiny_vision_config(vision_layers, text_width),
            text_config=dict(
                hidden_size=text_width,
                intermediate_size=2 * text_width,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                vocab_size=len(tokenizer),
                max_position_embeddings=512,
                rope_parameters={
                    "rope_type": "default",
                    "mrope_section": [head // 2 - 2 * quarter, quarter, quarter],
                    "rope_theta": 10000.0,
                },
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                tie_word_embeddings=False,
            ),
            image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
            video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
            vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
            vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
            tie_word_embeddings=False,
        )
        model = getattr(transformers, self.adapter.model_class)(config)
        redraw_linears_at_unit_gain(model.model.visual.merger.mlp)
        processor = _processor(
            self.adapter.processor_class, tokenizer, 8, 2, 2, min_pixels=32 * 32, max_pixels=64 * 64
        )
        return model, processor

    def _released_model_config(self, fields: dict, ids: dict, tokenizer: Any) -> tuple[Any, Any]:
        import transformers

        fields["text_config"].update(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"])
        fields.update(
            image_token_id=ids["<|image_pad|>"],
            video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"],
            vision_end_token_id=ids["<|vision_end|>"],
        )
        vision = fields["vision_config"]
        config_class = getattr(
            transformers, self.adapter.model_class.replace("ForConditionalGeneration", "Config")
        )
        processor = _processor(
            self.adapter.processor_class,
            tokenizer,
            vision["patch_size"],
            vision["spatial_merge_size"],
            vision["temporal_patch_size"],
            min_pixels=RELEASED_MIN_PIXELS,
            max_pixels=RELEASED_MAX_PIXELS,
        )
        return config_class(**fields), processor

    def _finish_random(self, model: nn.Module) -> None:
        redraw_linears_at_unit_gain(model.model.visual.merger.mlp)


class Qwen25VLBuilder(Qwen2VLBuilder):
    """Builds Qwen2.5-VL test models (the ``qwen2_5_vl`` adapter's family): window attention with
    full-attention blocks, and the released 3B and 7B."""

    family: ClassVar[str] = "qwen2_5_vl"
    released_configs: ClassVar[dict] = QWEN25_VL_RELEASED_CONFIGS

    def _tiny_vision_config(self, vision_layers: int, text_width: int) -> dict[str, Any]:
        # Windows of 32 px (2 x 2 merge blocks); the odd blocks attend over whole images.
        return dict(
            depth=vision_layers,
            hidden_size=32,
            intermediate_size=48,
            out_hidden_size=text_width,
            num_heads=4,
            in_channels=3,
            patch_size=8,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=32,
            fullatt_block_indexes=list(range(1, vision_layers, 2)),
            hidden_act="silu",
        )


#: The builders :mod:`vis_steer_lens.testing` registers from this module, in registration order.
BUILDERS = (Qwen25VLBuilder(), Qwen2VLBuilder())


__all__ = [
    "BUILDERS",
    "QWEN25_VL_RELEASED_CONFIGS",
    "QWEN2_VL_TOKEN_IDS",
    "Qwen25VLBuilder",
    "Qwen2VLBuilder",
]
