"""Gemma 3 (``Gemma3ForConditionalGeneration``): a SigLIP tower, an average-pooling projector, Gemma 3 text."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from PIL import Image
from torch import nn

from vis_steer_lens.adapters.base import UnsupportedModelError, VLMAdapter
from vis_steer_lens.adapters.checkpoints import CheckpointError, load_tensors
from vis_steer_lens.hooked_vit import HookedViTConfig

#: Empty-image choices understood by :meth:`Gemma3Adapter.empty_image_pixel_values`.
EMPTY_IMAGES = ("white", "black", "gray", "mean", "zeros")

# Key prefixes under which checkpoints store the vision tower: transformers 5 writes
# `vision_tower.`, the released Gemma 3 checkpoints `vision_tower.vision_model.`.
_VISION_PREFIXES = (
    "model.vision_tower.vision_model.",
    "model.vision_tower.",
    "vision_tower.vision_model.",
    "vision_tower.",
)


def _strip_vision_prefix(key: str) -> str | None:
    for prefix in _VISION_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return None


class Gemma3Adapter(VLMAdapter):
    """Adapter for transformers' ``Gemma3ForConditionalGeneration`` (Gemma 3 4B/12B/27B, MedGemma)."""

    name: ClassVar[str] = "gemma3"
    model_types: ClassVar[tuple[str, ...]] = ("gemma3",)
    hf_vision_prefix: ClassVar[str] = "model.vision_tower."

    def vision_tower(self, model: nn.Module) -> nn.Module:
        return model.model.vision_tower

    def projector(self, model: nn.Module) -> nn.Module:
        return model.model.multi_modal_projector

    def image_token_id(self, model: nn.Module) -> int:
        return int(model.config.image_token_id)

    def hooked_vit_config(self, tower: nn.Module, model_name: str) -> HookedViTConfig:
        return siglip_config(tower, model_name, self.hf_vision_prefix)

    def load_model(self, name_or_path: str, *, device=None, dtype=None, revision=None) -> nn.Module:
        from transformers import Gemma3ForConditionalGeneration

        model = Gemma3ForConditionalGeneration.from_pretrained(
            name_or_path, dtype=dtype or "auto", revision=revision
        )
        return model.to(device or "cpu").eval()

    def load_vision_tower(self, name_or_path: str, *, device=None, dtype=None, revision=None) -> nn.Module:
        from transformers import AutoConfig, SiglipVisionModel

        config = AutoConfig.from_pretrained(name_or_path, revision=revision)
        tensors = load_tensors(name_or_path, lambda key: _strip_vision_prefix(key) is not None, revision)
        state = {_strip_vision_prefix(key): value for key, value in tensors.items()}
        if not state:
            raise CheckpointError(f"The checkpoint {name_or_path!r} holds no vision tower weights.")
        dtype = dtype or next(iter(state.values())).dtype
        vision_config = config.vision_config
        vision_config._attn_implementation = "sdpa"
        with torch.device("meta"):
            tower = SiglipVisionModel(vision_config)
        missing, unexpected = tower.load_state_dict(state, strict=False, assign=True)
        # position_ids is a non-persistent buffer that checkpoints do not store.
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise CheckpointError(
                f"Vision weights of {name_or_path!r} do not fit a SigLIP tower: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}."
            )
        n_pos = tower.embeddings.position_embedding.num_embeddings
        tower.embeddings.position_ids = torch.arange(n_pos).expand((1, -1))
        return tower.to(device=device or "cpu", dtype=dtype).eval()

    def empty_image_pixel_values(
        self, kind: str, processor: Any, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """``pixel_values`` ``[1, 3, H, W]`` of an empty image.

        Args:
            kind: ``"white"``, ``"black"``, ``"gray"`` (128), ``"mean"`` (the processor's
                mean pixel, i.e. zeros after normalisation up to rounding) or ``"zeros"``
                (exact zeros after normalisation). The first four pass through the processor as
                a 224x224 RGB image, as the paper's code does.
            processor: The model's processor (its image processor resizes and normalises).
            dtype: Dtype of the result.
        """
        if kind not in EMPTY_IMAGES:
            raise ValueError(f"Unknown empty image {kind!r}; choose one of {EMPTY_IMAGES}.")
        image_processor = getattr(processor, "image_processor", processor)
        if kind == "zeros":
            size = image_processor.size
            height, width = size["height"], size["width"]
            return torch.zeros(1, 3, height, width, dtype=dtype)
        if kind == "mean":
            colour = tuple(int(round(255 * m)) for m in image_processor.image_mean)
        else:
            colour = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128)}[kind]
        image = Image.new("RGB", (224, 224), colour)
        pixel_values = image_processor(images=[image], return_tensors="pt")["pixel_values"]
        return pixel_values.to(dtype)


def siglip_config(tower: nn.Module, model_name: str, hf_prefix: str) -> HookedViTConfig:
    """Describe a ``SiglipVisionModel`` as a :class:`HookedViTConfig`."""
    cfg = tower.config
    if not all(hasattr(tower, part) for part in ("embeddings", "encoder", "post_layernorm")):
        raise UnsupportedModelError(
            f"Expected a SigLIP vision tower with embeddings, encoder and post_layernorm, got {type(tower).__name__}."
        )
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
        model_name=model_name,
        hf_prefix=hf_prefix,
    )
