"""LLaVA-1.5's test models: a tiny random ``LlavaForConditionalGeneration`` (CLIP tower, Llama text)
and the released LLaVA-1.5-7B architecture with random weights (see :mod:`vis_steer_lens.testing`)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from vis_steer_lens.testing.builders import ModelBuilder, redraw_linears_at_unit_gain
from vis_steer_lens.testing.tokenizers import word_tokenizer

# The test models' tokenizer and chat template: Llama's special tokens and the llava-hf template's
# turn structure ("USER: <image>\n... ASSISTANT:"), with no end-of-turn token besides </s>.
_TINY_SPECIAL = {"pad_token": "<pad>", "eos_token": "</s>", "bos_token": "<s>", "unk_token": "<unk>"}
_TINY_EXTRA = {"image_token": "<image>"}
_TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{{ message['role'].upper() + ': ' }}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<image>\n' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] }}{%- endif -%}"
    "{%- endfor -%}"
    "{{ ' ' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)

# ---- LLaVA-1.5-7B (llava-hf/llava-1.5-7b-hf), written from the model card and the LLaVA paper
# (Liu et al., "Improved Baselines with Visual Instruction Tuning"): CLIP ViT-L/14 at 336 px
# (openai/clip-vit-large-patch14-336) and Vicuna-7B v1.5 (Llama 2 7B). Recalled, not re-read from
# the hub (no network here); the values are those of the published architectures.
_CLIP_L14_336 = dict(  # "vision_config": CLIP ViT-L/14-336
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=336,
    patch_size=14,
    projection_dim=768,
    hidden_act="quick_gelu",  # CLIP's
    layer_norm_eps=1e-5,  # CLIPVisionConfig default
    num_channels=3,
)
_VICUNA_7B = dict(  # "text_config": Vicuna-7B v1.5, a Llama 2 7B
    model_type="llama",
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    hidden_act="silu",
    vocab_size=32_064,  # Llama's 32,000 plus <image> (32,000), <pad> (32,001) and padding to 64
    max_position_embeddings=4096,
    rms_norm_eps=1e-5,
    rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
    tie_word_embeddings=False,
    pad_token_id=32_001,
    bos_token_id=1,
    eos_token_id=2,
)

#: LLaVA-1.5-7B as released (llava-hf/llava-1.5-7b-hf), for :func:`~vis_steer_lens.testing.random_vlm`.
LLAVA_RELEASED_CONFIGS = {
    "llava-1.5-7b": dict(
        vision_config=_CLIP_L14_336,
        text_config=_VICUNA_7B,
        image_token_index=32_000,
        image_seq_length=576,  # (336 / 14) ** 2 patches, the class token dropped
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    ),
}

#: The released LLaVA-1.5 tokenizer's special tokens (Llama's, plus <image> and <pad>) and their ids.
LLAVA_TOKEN_IDS = {"<unk>": 0, "<s>": 1, "</s>": 2, "<image>": 32_000, "<pad>": 32_001}

#: CLIP's normalisation (the OpenAI CLIP image processor's mean and std).
_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _processor(tokenizer: Any, image_size: int, patch_size: int) -> Any:
    """LLaVA's processor over ``tokenizer``: CLIP's resize (shortest edge) and centre crop to
    ``image_size``, CLIP normalisation; each image becomes ``(image_size / patch_size) ** 2`` soft
    tokens (the class token dropped)."""
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=_CLIP_MEAN,
        image_std=_CLIP_STD,
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        chat_template=_TINY_CHAT_TEMPLATE,
        image_token="<image>",
        num_additional_image_tokens=1,  # the class token, dropped again by the strategy
    )


class LlavaBuilder(ModelBuilder):
    """Builds LLaVA-1.5 test models (the ``llava`` adapter's family)."""

    family: ClassVar[str] = "llava"
    released_configs: ClassVar[dict] = LLAVA_RELEASED_CONFIGS
    test_tokens: ClassVar[tuple] = (_TINY_SPECIAL, _TINY_EXTRA, _TINY_CHAT_TEMPLATE, True)
    released_token_ids: ClassVar[dict] = LLAVA_TOKEN_IDS

    def build_tiny(self, *, vision_layers: int, text_width: int, **options) -> tuple[nn.Module, Any]:
        """See :meth:`ModelBuilder.build_tiny`: CLIP reading 32x32 images in 8-px patches (16 soft
        tokens per image, the class token dropped), the language model reading the penultimate layer."""
        from transformers import LlavaConfig, LlavaForConditionalGeneration

        tokenizer = word_tokenizer(*self.test_tokens)
        config = LlavaConfig(
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
            text_config=dict(
                model_type="llama",
                hidden_size=text_width,
                intermediate_size=2 * text_width,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                vocab_size=len(tokenizer),
                max_position_embeddings=256,
                pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                tie_word_embeddings=False,
            ),
            image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
            image_seq_length=16,
            projector_hidden_act="gelu",
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
            tie_word_embeddings=False,
        )
        model = LlavaForConditionalGeneration(config)
        redraw_linears_at_unit_gain(model.model.multi_modal_projector)
        return model, _processor(tokenizer, image_size=32, patch_size=8)

    def _released_model_config(self, fields: dict, ids: dict, tokenizer: Any) -> tuple[Any, Any]:
        from transformers import LlavaConfig

        fields["text_config"].update(
            pad_token_id=ids["<pad>"], bos_token_id=ids["<s>"], eos_token_id=ids["</s>"]
        )
        fields["image_token_index"] = ids["<image>"]
        vision = fields["vision_config"]
        processor = _processor(tokenizer, vision["image_size"], vision["patch_size"])
        return LlavaConfig(**fields), processor

    def _finish_random(self, model: nn.Module) -> None:
        redraw_linears_at_unit_gain(model.model.multi_modal_projector)


#: The builders :mod:`vis_steer_lens.testing` registers from this module, in registration order.
BUILDERS = (LlavaBuilder(),)


__all__ = ["BUILDERS", "LLAVA_RELEASED_CONFIGS", "LLAVA_TOKEN_IDS", "LlavaBuilder"]
