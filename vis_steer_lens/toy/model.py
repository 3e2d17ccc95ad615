"""The toy vision-language model: a tiny Gemma 3 (SigLIP tower + Gemma 3 text) built from scratch."""

from __future__ import annotations

from typing import Any

import torch
from transformers import Gemma3Config, Gemma3ForConditionalGeneration, PreTrainedTokenizerBase

from vis_steer_lens.toy.tokenizer import special_token_ids
from vis_steer_lens.toy.world import CELL_SIZE, IMAGE_SIZE

# One 16-px patch per world cell: 4×4 = 16 patches, and the projector keeps all 16 (pooling kernel 1),
# so one soft token sees exactly one cell (prototype round 4).
MM_TOKENS_PER_IMAGE = (IMAGE_SIZE // CELL_SIZE) ** 2

VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 128,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "image_size": IMAGE_SIZE,
    "patch_size": CELL_SIZE,
    "vision_use_head": False,
}
TEXT_DEFAULTS: dict[str, Any] = {
    "hidden_size": 128,
    "intermediate_size": 512,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "query_pre_attn_scalar": 32,
    # A 5-image top-k prompt is about 5 × 22 image-related tokens + ~30 text tokens; 512 leaves room.
    "max_position_embeddings": 512,
    # No layer ever slides at these lengths: the window covers the whole context.
    "sliding_window": 512,
}


def toy_model_config(tokenizer: PreTrainedTokenizerBase, **overrides: Any) -> Gemma3Config:
    """Config of the toy Gemma 3 (prototype round 4 architecture).

    Args:
        tokenizer: The toy tokenizer (`build_tokenizer()`); gives the vocabulary size and special ids.
        **overrides: `vision_<key>` / `text_<key>` override a key of the vision / text config
            (e.g. `vision_num_hidden_layers=2`, `text_hidden_size=32`); `mm_tokens_per_image` and
            `initializer_range` override the top-level config.

    Returns:
        A `Gemma3Config` with `vision_use_head=False` and the tokenizer's image/boi/eoi/pad/bos/eos ids.

    Raises:
        ValueError: For an override key that fits none of the above.
    """
    ids = special_token_ids(tokenizer)
    vision = dict(VISION_DEFAULTS)
    text = dict(TEXT_DEFAULTS)
    top: dict[str, Any] = {"mm_tokens_per_image": MM_TOKENS_PER_IMAGE, "initializer_range": 0.02}
    for key, value in overrides.items():
        if key.startswith("vision_") and key != "vision_use_head":
            vision[key[len("vision_") :]] = value
        elif key.startswith("text_"):
            text[key[len("text_") :]] = value
        elif key in top:
            top[key] = value
        else:
            raise ValueError(
                f"Unknown override {key!r}; use vision_<key>, text_<key>, mm_tokens_per_image or "
                "initializer_range."
            )
    text.update(
        vocab_size=ids["vocab_size"],
        pad_token_id=ids["pad_token_id"],
        bos_token_id=ids["bos_token_id"],
        eos_token_id=ids["eos_token_id"],
    )
    config = Gemma3Config(
        vision_config=vision,
        text_config=text,
        mm_tokens_per_image=top["mm_tokens_per_image"],
        image_token_index=ids["image_token_id"],
        boi_token_index=ids["boi_token_id"],
        eoi_token_index=ids["eoi_token_id"],
        initializer_range=top["initializer_range"],
    )
    # Generation stops at <eos> or at the end of the model's turn.
    config.eos_token_id = [ids["eos_token_id"], ids["end_of_turn_id"]]
    config.pad_token_id = ids["pad_token_id"]
    config.bos_token_id = ids["bos_token_id"]
    return config


def build_toy_model(config: Gemma3Config, seed: int = 0) -> Gemma3ForConditionalGeneration:
    """A freshly initialised toy model, deterministic under `seed`.

    The projector weight starts at zeros in transformers, which would cut the image off from the
    language model (zero gradient to the vision tower); it is drawn from N(0, initializer_range²) so the
    soft tokens start at the scale of the (sqrt(d)-scaled) text embeddings.

    Args:
        config: From `toy_model_config`.
        seed: Seed of the weight initialisation.

    Returns:
        A float32 `Gemma3ForConditionalGeneration` in train mode, with a generation config that stops
        at `<eos>`/`<end_of_turn>` and pads with `<pad>`.
    """
    # Seeded without disturbing the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Gemma3ForConditionalGeneration(config)
        projector = model.model.multi_modal_projector
        with torch.no_grad():
            projector.mm_input_projection_weight.normal_(0.0, config.initializer_range)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.generation_config.bos_token_id = config.bos_token_id
    return model.train()


__all__ = ["MM_TOKENS_PER_IMAGE", "build_toy_model", "toy_model_config"]
