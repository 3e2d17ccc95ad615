"""InternVL3's test models: a tiny random ``InternVLForConditionalGeneration`` and the released
InternVL3-14B architecture with random weights (see :mod:`vis_steer_lens.testing`)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from vis_steer_lens.adapters.internvl3 import image_only_processor_class
from vis_steer_lens.testing.builders import ModelBuilder, redraw_linears_at_unit_gain
from vis_steer_lens.testing.tokenizers import word_tokenizer

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

#: InternVL3-14B as released (OpenGVLab/InternVL3-14B-hf), for :func:`~vis_steer_lens.testing.random_vlm`.
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
    return image_only_processor_class()(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_length=image_seq_length,
        chat_template=_TINY_CHAT_TEMPLATE,
    )


class InternVL3Builder(ModelBuilder):
    """Builds InternVL3 test models (the ``internvl3`` adapter's family)."""

    family: ClassVar[str] = "internvl3"
    released_configs: ClassVar[dict] = INTERNVL3_RELEASED_CONFIGS
    test_tokens: ClassVar[tuple] = (_TINY_SPECIAL, _TINY_EXTRA, _TINY_CHAT_TEMPLATE, False)
    released_token_ids: ClassVar[dict] = INTERNVL3_TOKEN_IDS

    def build_tiny(
        self,
        *,
        vision_layers: int,
        text_width: int,
        norm_type: str = "layer_norm",
        qk_norm: bool = False,
        **options,
    ) -> tuple[nn.Module, Any]:
        """See :meth:`ModelBuilder.build_tiny`; ``norm_type`` and ``qk_norm`` are InternViT's options."""
        from transformers import InternVLConfig, InternVLForConditionalGeneration

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
        redraw_linears_at_unit_gain(model.model.multi_modal_projector)
        return model, _processor(tokenizer, image_size=32, image_seq_length=4, crop_to_patches=False)

    def _released_model_config(self, fields: dict, ids: dict, tokenizer: Any) -> tuple[Any, Any]:
        from transformers import InternVLConfig

        fields["text_config"].update(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"])
        fields["image_token_id"] = ids["<IMG_CONTEXT>"]
        image_size = fields["vision_config"]["image_size"][0]
        processor = _processor(tokenizer, image_size, fields["image_seq_length"], crop_to_patches=True)
        return InternVLConfig(**fields), processor

    def _finish_random(self, model: nn.Module) -> None:
        redraw_linears_at_unit_gain(model.model.multi_modal_projector)


#: The builders :mod:`vis_steer_lens.testing` registers from this module, in registration order.
BUILDERS = (InternVL3Builder(),)


__all__ = ["BUILDERS", "INTERNVL3_RELEASED_CONFIGS", "INTERNVL3_TOKEN_IDS", "InternVL3Builder"]
