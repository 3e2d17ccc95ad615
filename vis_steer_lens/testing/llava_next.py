"""LLaVA-NeXT and LLaVA-OneVision test models: tiny random AnyRes models (CLIP + Llama, SigLIP + Qwen2)
and the released architectures with random weights (see :mod:`vis_steer_lens.testing`)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from vis_steer_lens.testing.builders import ModelBuilder, redraw_linears_at_unit_gain
from vis_steer_lens.testing.llava import (
    _CLIP_L14_336,
    _CLIP_MEAN,
    _CLIP_STD,
    _TINY_CHAT_TEMPLATE,
    _TINY_EXTRA,
    _TINY_SPECIAL,
    LLAVA_TOKEN_IDS,
)
from vis_steer_lens.testing.tokenizers import word_tokenizer

#: Tiny tiling: 32 px crops of 8-px patches (4 x 4 per crop); a 1 x 2, 2 x 1 or 2 x 2 tile grid.
TINY_PINPOINTS = [[32, 64], [64, 32], [64, 64]]

# ---- LLaVA-v1.6-Mistral-7B (llava-hf/llava-v1.6-mistral-7b-hf). The hub is out of reach here: the
# values are the published architectures (CLIP ViT-L/14-336 as in LLaVA-1.5, Mistral-7B v0.2) and the
# LLaVA-NeXT blog's five AnyRes resolutions (672x672, 336x1344, 1344x336 in the paper; the hf
# checkpoint lists the 2-crop and 3-crop pinpoints below), recalled rather than re-read.
_MISTRAL_7B = dict(
    model_type="mistral",
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    hidden_act="silu",
    vocab_size=32_064,
    max_position_embeddings=32_768,
    rms_norm_eps=1e-5,
    rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
    sliding_window=None,
    tie_word_embeddings=False,
)
_LLAVA_NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]

# ---- LLaVA-OneVision-7B (llava-hf/llava-onevision-qwen2-7b-ov-hf): SigLIP so400m/14 at 384 px
# (google/siglip-so400m-patch14-384, used without its pooling head) and Qwen2-7B; the pinpoints are
# every (h, w) multiple of 384 up to 2304 (transformers' LlavaOnevisionImageProcessor default, which
# the checkpoint's preprocessor_config repeats). Recalled from the model card, not re-read.
_SIGLIP_SO400M_384 = dict(
    model_type="siglip_vision_model",
    hidden_size=1152,
    intermediate_size=4304,
    num_hidden_layers=27,
    num_attention_heads=16,
    image_size=384,
    patch_size=14,
    hidden_act="gelu_pytorch_tanh",
    layer_norm_eps=1e-6,
    vision_use_head=False,
)
_QWEN2_7B = dict(
    model_type="qwen2",
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    hidden_act="silu",
    vocab_size=152_128,
    max_position_embeddings=32_768,
    rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
    tie_word_embeddings=False,
)
_ONEVISION_PINPOINTS = [[384 * h, 384 * w] for h in range(1, 7) for w in range(1, 7)]

LLAVA_NEXT_RELEASED_CONFIGS = {
    "llava-v1.6-mistral-7b": dict(
        vision_config=dict(_CLIP_L14_336, model_type="clip_vision_model"),
        text_config=_MISTRAL_7B,
        image_token_index=32_000,
        image_grid_pinpoints=_LLAVA_NEXT_PINPOINTS,
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    ),
}
LLAVA_ONEVISION_RELEASED_CONFIGS = {
    "llava-onevision-7b": dict(
        vision_config=_SIGLIP_SO400M_384,
        text_config=_QWEN2_7B,
        image_token_index=151_646,
        video_token_index=151_647,
        image_grid_pinpoints=_ONEVISION_PINPOINTS,
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        tie_word_embeddings=False,
    ),
}

# OneVision's tokens: Qwen2's (ChatML turns) plus <image> and <video>.
_OV_SPECIAL = {"pad_token": "<|endoftext|>", "eos_token": "<|im_end|>", "unk_token": "<unk>"}
_OV_EXTRA = {"image_token": "<image>", "video_token": "<video>"}
_OV_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<image>\n' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] }}{%- endif -%}"
    "{%- endfor -%}"
    "{{ '<|im_end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)
ONEVISION_TOKEN_IDS = {
    "<|endoftext|>": 151_643,
    "<|im_end|>": 151_645,
    "<image>": 151_646,
    "<video>": 151_647,
}
_SIGLIP_MEAN = [0.5, 0.5, 0.5]


def _next_processor(tokenizer: Any, crop: int, patch: int, pinpoints: list[list[int]]) -> Any:
    """LLaVA-NeXT's processor: CLIP normalisation, AnyRes tiling by ``pinpoints``."""
    from transformers import LlavaNextProcessor
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": crop},
        crop_size={"height": crop, "width": crop},
        image_grid_pinpoints=pinpoints,
        image_mean=_CLIP_MEAN,
        image_std=_CLIP_STD,
    )
    return LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        chat_template=_TINY_CHAT_TEMPLATE,
        image_token="<image>",
        num_additional_image_tokens=1,
    )


def _onevision_processor(tokenizer: Any, crop: int, patch: int, pinpoints, aspect_ratio: str) -> Any:
    """LLaVA-OneVision's processor for images only (its video processor needs torchvision)."""
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    from vis_steer_lens.adapters.llava_onevision import image_only_processor_class

    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": crop, "width": crop},
        image_grid_pinpoints=pinpoints,
        image_mean=_SIGLIP_MEAN,
        image_std=_SIGLIP_MEAN,
    )
    return image_only_processor_class()(
        image_processor=image_processor,
        tokenizer=tokenizer,
        num_image_tokens=(crop // patch) ** 2,
        vision_feature_select_strategy="full",
        chat_template=_OV_CHAT_TEMPLATE,
        vision_aspect_ratio=aspect_ratio,
    )


class LlavaNextBuilder(ModelBuilder):
    """Builds LLaVA-NeXT test models (the ``llava_next`` adapter's family)."""

    family: ClassVar[str] = "llava_next"
    released_configs: ClassVar[dict] = LLAVA_NEXT_RELEASED_CONFIGS
    test_tokens: ClassVar[tuple] = (_TINY_SPECIAL, _TINY_EXTRA, _TINY_CHAT_TEMPLATE, True)
    released_token_ids: ClassVar[dict] = LLAVA_TOKEN_IDS

    def build_tiny(self, *, vision_layers: int, text_width: int, **options) -> tuple[nn.Module, Any]:
        """See :meth:`ModelBuilder.build_tiny`: CLIP on 32-px crops of 8-px patches, tiled by
        :data:`TINY_PINPOINTS` (a base crop plus 2 or 4 tiles per image), the language model reading
        the penultimate layer without the class token."""
        from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

        tokenizer = word_tokenizer(*self.test_tokens)
        config = LlavaNextConfig(
            vision_config=dict(
                model_type="clip_vision_model",
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=vision_layers,
                num_attention_heads=4,
                image_size=32,
                patch_size=8,
                projection_dim=32,
                hidden_act="quick_gelu",
            ),
            text_config=_tiny_text("llama", text_width, tokenizer),
            image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
            image_grid_pinpoints=TINY_PINPOINTS,
            projector_hidden_act="gelu",
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
            tie_word_embeddings=False,
        )
        model = LlavaNextForConditionalGeneration(config)
        redraw_linears_at_unit_gain(model.model.multi_modal_projector)
        return model, _next_processor(tokenizer, 32, 8, TINY_PINPOINTS)

    def _released_model_config(self, fields: dict, ids: dict, tokenizer: Any) -> tuple[Any, Any]:
        from transformers import LlavaNextConfig

        fields["text_config"].update(
            pad_token_id=ids["<pad>"], bos_token_id=ids["<s>"], eos_token_id=ids["</s>"]
        )
        fields["image_token_index"] = ids["<image>"]
        vision = fields["vision_config"]
        processor = _next_processor(
            tokenizer, vision["image_size"], vision["patch_size"], fields["image_grid_pinpoints"]
        )
        return LlavaNextConfig(**fields), processor

    def _finish_random(self, model: nn.Module) -> None:
        redraw_linears_at_unit_gain(model.model.multi_modal_projector)


class LlavaOnevisionBuilder(ModelBuilder):
    """Builds LLaVA-OneVision test models (the ``llava_onevision`` adapter's family)."""

    family: ClassVar[str] = "llava_onevision"
    released_configs: ClassVar[dict] = LLAVA_ONEVISION_RELEASED_CONFIGS
    test_tokens: ClassVar[tuple] = (_OV_SPECIAL, _OV_EXTRA, _OV_CHAT_TEMPLATE, False)
    released_token_ids: ClassVar[dict] = ONEVISION_TOKEN_IDS

    def build_tiny(self, *, vision_layers: int, text_width: int, **options) -> tuple[nn.Module, Any]:
        """See :meth:`ModelBuilder.build_tiny`: SigLIP on 32-px crops of 8-px patches, tiled by
        :data:`TINY_PINPOINTS`; ``anyres_max_2`` so that a 2 x 2 tiling is shrunk (8 x 8 → 5 x 5)
        and a 1 x 2 one is not; the language model reads the last block's output, all tokens."""
        from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

        tokenizer = word_tokenizer(*self.test_tokens)
        config = LlavaOnevisionConfig(
            vision_config=dict(
                model_type="siglip_vision_model",
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=vision_layers,
                num_attention_heads=4,
                image_size=32,
                patch_size=8,
                vision_use_head=False,
            ),
            text_config=_tiny_text("qwen2", text_width, tokenizer),
            image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
            video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
            image_grid_pinpoints=TINY_PINPOINTS,
            projector_hidden_act="gelu",
            vision_feature_layer=-1,
            vision_feature_select_strategy="full",
            vision_aspect_ratio="anyres_max_2",
            tie_word_embeddings=False,
        )
        model = LlavaOnevisionForConditionalGeneration(config)
        redraw_linears_at_unit_gain(model.model.multi_modal_projector)
        return model, _onevision_processor(tokenizer, 32, 8, TINY_PINPOINTS, "anyres_max_2")

    def _released_model_config(self, fields: dict, ids: dict, tokenizer: Any) -> tuple[Any, Any]:
        from transformers import LlavaOnevisionConfig

        fields["text_config"].update(pad_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"])
        fields["image_token_index"] = ids["<image>"]
        fields["video_token_index"] = ids["<video>"]
        vision = fields["vision_config"]
        processor = _onevision_processor(
            tokenizer,
            vision["image_size"],
            vision["patch_size"],
            fields["image_grid_pinpoints"],
            fields["vision_aspect_ratio"],
        )
        return LlavaOnevisionConfig(**fields), processor

    def _finish_random(self, model: nn.Module) -> None:
        redraw_linears_at_unit_gain(model.model.multi_modal_projector)


def _tiny_text(model_type: str, width: int, tokenizer: Any) -> dict[str, Any]:
    """A two-layer language model config of ``model_type`` over ``tokenizer``'s vocabulary."""
    return dict(
        model_type=model_type,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )


#: The builders :mod:`vis_steer_lens.testing` registers from this module, in registration order.
BUILDERS = (LlavaOnevisionBuilder(), LlavaNextBuilder())


__all__ = [
    "BUILDERS",
    "LLAVA_NEXT_RELEASED_CONFIGS",
    "LLAVA_ONEVISION_RELEASED_CONFIGS",
    "LlavaNextBuilder",
    "LlavaOnevisionBuilder",
    "TINY_PINPOINTS",
]
