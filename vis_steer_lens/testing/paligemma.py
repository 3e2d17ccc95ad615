"""PaliGemma 2's test models: a tiny random ``PaliGemmaForConditionalGeneration`` (SigLIP, Gemma 2 text)
and the released PaliGemma 2 3B at 448 px with random weights (see :mod:`vis_steer_lens.testing`)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from vis_steer_lens.testing.builders import ModelBuilder
from vis_steer_lens.testing.tokenizers import word_tokenizer

# The test models' tokenizer: Gemma's special tokens and PaliGemma's <image>. PaliGemma has no chat
# template (its processor writes the prompt), so none is given.
_TINY_SPECIAL = {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>", "unk_token": "<unk>"}
_TINY_EXTRA = {"image_token": "<image>"}

# ---- PaliGemma 2 3B at 448 px (google/paligemma2-3b-pt-448), written from the PaliGemma 2 report
# (Steiner et al., 2024) and the Gemma 2 2B architecture: SigLIP So400m/14 at 448 px (1024 soft
# tokens) and Gemma 2 2B. Recalled, not re-read from the hub (no network here).
_SIGLIP_448 = dict(  # "vision_config": SigLIP So400m/14
    hidden_size=1152,
    intermediate_size=4304,
    num_hidden_layers=27,
    num_attention_heads=16,
    image_size=448,
    patch_size=14,
    vision_use_head=False,
    hidden_act="gelu_pytorch_tanh",
    layer_norm_eps=1e-6,
    num_channels=3,
)
_GEMMA2_2B = dict(  # "text_config": Gemma 2 2B
    model_type="gemma2",
    hidden_size=2304,
    intermediate_size=9216,
    num_hidden_layers=26,
    num_attention_heads=8,
    num_key_value_heads=4,
    head_dim=256,
    query_pre_attn_scalar=256,
    sliding_window=4096,
    final_logit_softcapping=30.0,
    attn_logit_softcapping=50.0,
    hidden_activation="gelu_pytorch_tanh",
    rms_norm_eps=1e-6,
    max_position_embeddings=8192,
    vocab_size=257_216,  # Gemma's 256,000 plus PaliGemma's <image>, 1024 <loc> and 128 <seg> tokens, padded
    pad_token_id=0,
    eos_token_id=1,
    bos_token_id=2,
)

#: PaliGemma 2 3B at 448 px as released, for :func:`~vis_steer_lens.testing.random_vlm`.
PALIGEMMA_RELEASED_CONFIGS = {
    "paligemma2-3b-448": dict(
        vision_config=_SIGLIP_448,
        text_config=_GEMMA2_2B,
        image_token_index=257_152,
        projection_dim=2304,  # the projector maps SigLIP's 1152 to Gemma 2's 2304
        hidden_size=2048,
    ),
}

#: The released PaliGemma tokenizer's special tokens and their ids.
PALIGEMMA_TOKEN_IDS = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<image>": 257_152}


def _processor(tokenizer: Any, image_size: int, patch_size: int) -> Any:
    """PaliGemma's processor over ``tokenizer``: square resize to ``image_size``, normalised to
    [-1, 1]; ``(image_size / patch_size) ** 2`` image tokens per image, then ``<bos>``, the prompt, a
    newline. (Built before the model: it adds PaliGemma's <loc>/<seg> tokens to the tokenizer.)"""
    from transformers import PaliGemmaProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    image_processor = SiglipImageProcessorPil(
        size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    image_processor.image_seq_length = (image_size // patch_size) ** 2
    return PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)


class PaliGemmaBuilder(ModelBuilder):
    """Builds PaliGemma 2 test models (the ``paligemma`` adapter's family)."""

    family: ClassVar[str] = "paligemma"
    released_configs: ClassVar[dict] = PALIGEMMA_RELEASED_CONFIGS
    test_tokens: ClassVar[tuple] = (_TINY_SPECIAL, _TINY_EXTRA, "", False)
    released_token_ids: ClassVar[dict] = PALIGEMMA_TOKEN_IDS

    def build_tiny(self, *, vision_layers: int, text_width: int, **options) -> tuple[nn.Module, Any]:
        """See :meth:`ModelBuilder.build_tiny`: SigLIP reading 32x32 images in 8-px patches (16 soft
        tokens per image), Gemma 2 text with sliding-window layers and soft-capping."""
        from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

        tokenizer = word_tokenizer(*self.test_tokens)
        processor = _processor(tokenizer, image_size=32, patch_size=8)
        config = PaliGemmaConfig(
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
            text_config=dict(
                model_type="gemma2",
                hidden_size=text_width,
                intermediate_size=2 * text_width,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=8,
                query_pre_attn_scalar=8,
                sliding_window=16,  # shorter than a prompt, so the sliding layers differ
                vocab_size=len(tokenizer),
                max_position_embeddings=256,
                pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
            ),
            image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
            projection_dim=text_width,
            hidden_size=text_width,
            vocab_size=len(tokenizer),
        )
        model = PaliGemmaForConditionalGeneration(config)
        _strengthen(model)
        return model, processor

    def _released_model_config(self, fields: dict, ids: dict, tokenizer: Any) -> tuple[Any, Any]:
        from transformers import PaliGemmaConfig

        fields["text_config"].update(
            pad_token_id=ids["<pad>"], eos_token_id=ids["<eos>"], bos_token_id=ids["<bos>"]
        )
        fields["image_token_index"] = ids["<image>"]
        fields["vocab_size"] = fields["text_config"]["vocab_size"]
        vision = fields["vision_config"]
        processor = _processor(tokenizer, vision["image_size"], vision["patch_size"])
        return PaliGemmaConfig(**fields), processor

    def _finish_random(self, model: nn.Module) -> None:
        _strengthen(model)


def _strengthen(model: nn.Module) -> None:
    """The projector at unit gain and the tied embeddings drawn small, so a random Gemma's answers
    depend on the image (as Gemma 3's builder does, for the same reasons)."""
    linear = model.model.multi_modal_projector.linear
    with torch.no_grad():
        linear.weight.normal_(std=linear.in_features**-0.5)
        model.get_input_embeddings().weight.normal_(std=0.001)


#: The builders :mod:`vis_steer_lens.testing` registers from this module, in registration order.
BUILDERS = (PaliGemmaBuilder(),)


__all__ = ["BUILDERS", "PALIGEMMA_RELEASED_CONFIGS", "PALIGEMMA_TOKEN_IDS", "PaliGemmaBuilder"]
