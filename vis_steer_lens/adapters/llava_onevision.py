"""LLaVA-OneVision (``LlavaOnevisionForConditionalGeneration``): a SigLIP tower with LLaVA-NeXT's AnyRes
tiling (:class:`~vis_steer_lens.adapters.llava_next.AnyResAdapter`), a two-layer MLP projector and a
Qwen2 language model.

What differs from LLaVA-NeXT:

* The tower is SigLIP (Gemma 3's, :class:`~vis_steer_lens.adapters.gemma3.Gemma3Adapter`): no class token,
  and the language model reads ``hidden_states[-1]`` (``vision_feature_layer=-1``, strategy ``"full"``),
  the last block's output *before* SigLIP's final norm, which therefore never reaches it.
* ``vision_aspect_ratio="anyres_max_N"``: an unpadded stitched grid larger than ``N`` crops' worth of
  patches (by more than 10 %) is shrunk bilinearly before the newlines are added; every unpadded patch
  still feeds the soft tokens, through the interpolation.
* A row with several images tiles none of them (``batch_num_images``): each is its base crop only.
"""

from __future__ import annotations

import functools
import math
from typing import Any, ClassVar

import torch
from torch import nn

from vis_steer_lens.adapters.gemma3 import GEMMA3_HOOK_NAMES, Gemma3Adapter
from vis_steer_lens.adapters.llava_next import AnyResAdapter
from vis_steer_lens.hook_names import HookNameMap
from vis_steer_lens.hooked_vit import HookedViTConfig

#: SigLIP inside LLaVA-OneVision: the same modules and paths as in Gemma 3 (``model.vision_tower.``).
LLAVA_ONEVISION_HOOK_NAMES: HookNameMap = GEMMA3_HOOK_NAMES


@functools.cache
def image_only_processor_class() -> type:
    """OneVision's processor without its video processor (which needs torchvision), keeping the
    settings it saves and reloads (image tokens per crop, strategy, aspect-ratio cap)."""
    from transformers import LlavaOnevisionProcessor

    class ImageOnlyLlavaOnevisionProcessor(LlavaOnevisionProcessor):
        """LLaVA-OneVision's processor for images only."""

        def __init__(
            self,
            image_processor=None,
            tokenizer=None,
            num_image_tokens=None,
            vision_feature_select_strategy=None,
            chat_template=None,
            image_token="<image>",
            video_token="<video>",
            vision_aspect_ratio="anyres_max_9",
            **kwargs,
        ):
            super().__init__(
                image_processor,
                tokenizer,
                None,
                num_image_tokens=num_image_tokens,
                vision_feature_select_strategy=vision_feature_select_strategy,
                chat_template=chat_template,
                image_token=image_token,
                video_token=video_token,
                vision_aspect_ratio=vision_aspect_ratio,
                **kwargs,
            )

    return ImageOnlyLlavaOnevisionProcessor


def max_crops(vision_aspect_ratio: str | None) -> int:
    """``N`` of ``"anyres_max_N"`` (transformers' default ``"anyres_max_9"``)."""
    return int((vision_aspect_ratio or "anyres_max_9").removeprefix("anyres_max_"))


class LlavaOnevisionAdapter(AnyResAdapter, Gemma3Adapter):
    """Adapter for transformers' ``LlavaOnevisionForConditionalGeneration`` (LLaVA-OneVision 0.5B-72B)."""

    name: ClassVar[str] = "llava_onevision"
    model_class: ClassVar[str] = "LlavaOnevisionForConditionalGeneration"
    model_types: ClassVar[tuple[str, ...]] = ("llava_onevision",)
    model_name_markers: ClassVar[tuple[str, ...]] = ("llava-onevision", "llava_onevision")
    hook_name_map: ClassVar[HookNameMap] = LLAVA_ONEVISION_HOOK_NAMES
    end_of_turn_tokens: ClassVar[tuple[str, ...]] = ("<|im_end|>",)
    language_input_keys: ClassVar[tuple[str, ...]] = (
        "input_ids",
        "attention_mask",
        "image_sizes",
        "batch_num_images",
    )
    tower_input_keys: ClassVar[tuple[str, ...]] = ("image_sizes", "batch_num_images")

    def load_processor(self, name_or_path: str, *, revision: str | None = None) -> Any:
        """OneVision's processor, or, where it cannot load (its video processor needs torchvision), the
        same processor for images only from the folder's image processor settings and tokenizer."""
        try:
            processor = super().load_processor(name_or_path, revision=revision)
        except (OSError, ImportError, ValueError, TypeError, AttributeError):
            processor = None
        if hasattr(processor, "image_processor"):
            return processor
        return image_only_processor_class().from_pretrained(name_or_path, revision=revision)

    def crop_counts(self, cfg: HookedViTConfig, image_sizes: torch.Tensor, **tower_inputs: Any) -> list[int]:
        """As LLaVA-NeXT, except that images of a row holding several (``batch_num_images``) are one crop."""
        counts = super().crop_counts(cfg, image_sizes)
        batch_num_images = tower_inputs.get("batch_num_images")
        if batch_num_images is None:
            return counts
        tiled = [int(n) == 1 for n in torch.as_tensor(batch_num_images).tolist() for _ in range(int(n))]
        return [count if tile else 1 for count, tile in zip(counts, tiled, strict=True)]

    def shrunk_shape(self, rows: int, cols: int, cfg: HookedViTConfig) -> tuple[int, int]:
        """transformers' rule: shrink by ``ratio`` when the grid exceeds ``N`` crops by more than 10 %."""
        ratio = math.sqrt(
            rows * cols / (max_crops(self._settings(cfg)["vision_aspect_ratio"]) * cfg.grid_size**2)
        )
        if ratio > 1.1:
            return int(rows // ratio), int(cols // ratio)
        return rows, cols

    def shrink_tiles(self, tiles: torch.Tensor, config: Any) -> torch.Tensor:
        """Bilinear shrinking of ``[d, rows, cols]`` as transformers' ``pack_image_features``."""
        _, rows, cols = tiles.shape
        g = config.vision_config.image_size // config.vision_config.patch_size
        ratio = math.sqrt(rows * cols / (max_crops(config.vision_aspect_ratio) * g**2))
        if ratio <= 1.1:
            return tiles
        size = [int(rows // ratio), int(cols // ratio)]
        return nn.functional.interpolate(tiles[None], size, mode="bilinear")[0]


__all__ = ["LLAVA_ONEVISION_HOOK_NAMES", "LlavaOnevisionAdapter", "image_only_processor_class", "max_crops"]
