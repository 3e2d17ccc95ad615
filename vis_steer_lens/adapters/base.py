"""The adapter interface: where one VLM family keeps its vision tower, projector and language model."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from vis_steer_lens.hooked_vit import HookedViTConfig


class UnsupportedModelError(ValueError):
    """A model or checkpoint whose architecture no adapter supports."""


class VLMAdapter:
    """Knows the layout of one family of Hugging Face vision-language models.

    A new family (PaliGemma 2, LLaVA, InternVL, ...) is one subclass registered with
    :func:`vis_steer_lens.adapters.register_adapter`; nothing else in the library needs to
    change. Subclasses set the class attributes and implement the methods below.

    Attributes:
        name: Short name of the family, shown in error messages.
        model_types: ``config.model_type`` values this adapter handles.
        hf_vision_prefix: Module path of the vision tower inside the full model, with a
            trailing dot (used to translate Hugging Face module paths into hook names).
    """

    name: ClassVar[str] = "base"
    model_types: ClassVar[tuple[str, ...]] = ()
    hf_vision_prefix: ClassVar[str] = ""

    # ---- model layout
    def vision_tower(self, model: nn.Module) -> nn.Module:
        """The Hugging Face vision tower of a full model."""
        raise NotImplementedError

    def projector(self, model: nn.Module) -> nn.Module:
        """The module that maps the tower's output ``[batch, patches, d_vision]`` to soft tokens."""
        raise NotImplementedError

    def image_token_id(self, model: nn.Module) -> int:
        """Id of the placeholder token that soft image tokens replace."""
        raise NotImplementedError

    def hooked_vit_config(self, tower: nn.Module, model_name: str) -> HookedViTConfig:
        """The :class:`HookedViTConfig` describing ``tower``."""
        raise NotImplementedError

    # ---- loading
    def load_model(self, name_or_path: str, *, device=None, dtype=None, revision=None) -> nn.Module:
        """Load the full Hugging Face model."""
        raise NotImplementedError

    def load_vision_tower(self, name_or_path: str, *, device=None, dtype=None, revision=None) -> nn.Module:
        """Load only the vision tower's weights."""
        raise NotImplementedError

    def supports(self, config: Any) -> bool:
        """Whether a Hugging Face config belongs to this family."""
        return getattr(config, "model_type", None) in self.model_types

    # ---- inputs
    def empty_image_pixel_values(self, kind: str, processor: Any, dtype: torch.dtype) -> torch.Tensor:
        """``pixel_values`` ``[1, channels, H, W]`` of an "empty" image (white, black, ...)."""
        raise NotImplementedError
