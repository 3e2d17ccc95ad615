"""PaliGemma and PaliGemma 2 (``PaliGemmaForConditionalGeneration``): a SigLIP tower, a linear
projector with no pooling, a Gemma (PaliGemma 2: Gemma 2) language model with prefix-LM attention.

The tower is Gemma 3's SigLIP, so the tower's side is :class:`~vis_steer_lens.adapters.gemma3.Gemma3Adapter`'s;
what differs is the VLM around it. The language model reads the tower's last hidden state (after
SigLIP's final norm) through one linear layer, one soft token per patch (1024 at 448 px). The
prompt is the processor's own prefix format, with no chat template: ``<image>`` x N, ``<bos>``, the
instruction, ``\\n``; image and prompt form the prefix, attended both ways (``token_type_ids`` 0),
the answer is causal. Positions start at 1.

A bare ``SiglipVisionModel`` given to :meth:`HookedViT.from_hf` gets the Gemma 3 adapter (same
tower, same hook names); inside a PaliGemma, :meth:`HookedVLM.from_hf` picks this one by the model's
config type, and ``vlm.vision.cfg.family`` is ``"paligemma"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from vis_steer_lens.adapters.gemma3 import GEMMA3_HOOK_NAMES, Gemma3Adapter
from vis_steer_lens.hook_names import HookNameMap

#: SigLIP inside PaliGemma: the same modules and paths as in Gemma 3 (``model.vision_tower.``).
PALIGEMMA_HOOK_NAMES: HookNameMap = GEMMA3_HOOK_NAMES


class PaliGemmaAdapter(Gemma3Adapter):
    """Adapter for transformers' ``PaliGemmaForConditionalGeneration`` (PaliGemma 1 and 2, 224/448/896 px)."""

    name: ClassVar[str] = "paligemma"
    model_class: ClassVar[str] = "PaliGemmaForConditionalGeneration"
    model_types: ClassVar[tuple[str, ...]] = ("paligemma",)
    # The tower is claimed by Gemma 3 for bare towers (registered later, tried first); this adapter
    # is picked by the VLM's config type.
    tower_model_types: ClassVar[tuple[str, ...]] = ("siglip_vision_model",)
    model_name_markers: ClassVar[tuple[str, ...]] = ("paligemma",)
    hook_name_map: ClassVar[HookNameMap] = PALIGEMMA_HOOK_NAMES
    end_of_turn_tokens: ClassVar[tuple[str, ...]] = ()
    language_input_keys: ClassVar[tuple[str, ...]] = ("input_ids", "attention_mask", "token_type_ids")

    def prompt_inputs(self, processor: Any, images: list[list[Any]], texts: list[str]) -> Mapping[str, Any]:
        """PaliGemma's prompts: the processor's own prefix format (no chat template), each row its
        images' tokens, ``<bos>``, the instruction and a newline; ``token_type_ids`` all 0 (the prefix)."""
        if any(not row for row in images):
            raise ValueError(
                "PaliGemma prompts need at least one image per row (its processor has no text-only format)."
            )
        return processor(images=images, text=texts, padding=True, return_tensors="pt")

    def prefill_masks(self, hf_model: nn.Module, inputs: dict[str, torch.Tensor]) -> dict | None:
        """``None``: transformers builds PaliGemma's prefix-LM masks from ``token_type_ids`` (Gemma 3's
        image-block masks would make the prefix causal)."""
        return None

    def decoding_positions(
        self,
        hf_model: nn.Module,
        inputs: Mapping[str, torch.Tensor],
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """PaliGemma counts positions from 1 (its ``generate`` adds 1 to the text positions)."""
        offset = torch.ones(position_ids.shape[0], dtype=position_ids.dtype, device=position_ids.device)
        return position_ids + 1, offset
