"""Model-family adapters and the registry that picks one for a checkpoint or a model."""

from __future__ import annotations

from typing import Any

from torch import nn

from vis_steer_lens.adapters.base import UnsupportedModelError, VLMAdapter
from vis_steer_lens.adapters.gemma3 import EMPTY_IMAGES, Gemma3Adapter, siglip_config
from vis_steer_lens.hook_names import GEMMA3_HF_PREFIX
from vis_steer_lens.hooked_vit import HookedViTConfig

_ADAPTERS: list[VLMAdapter] = [Gemma3Adapter()]


def register_adapter(adapter: VLMAdapter) -> None:
    """Make a new model family loadable (it is tried before the built-in ones)."""
    _ADAPTERS.insert(0, adapter)


def supported_families() -> list[str]:
    """Names of the model families an adapter exists for."""
    return [a.name for a in _ADAPTERS]


def adapter_for(source: Any, revision: str | None = None) -> VLMAdapter:
    """Pick the adapter for a hub id / folder, a Hugging Face config, or a model.

    Raises:
        UnsupportedModelError: Naming the supported families, if none fits.
    """
    config = source
    if isinstance(source, str):
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(source, revision=revision)
    elif isinstance(source, nn.Module):
        config = getattr(source, "config", None)
    for adapter in _ADAPTERS:
        if adapter.supports(config):
            return adapter
    model_type = getattr(config, "model_type", type(source).__name__)
    raise UnsupportedModelError(
        f"No adapter for model type {model_type!r}. Supported families: {', '.join(supported_families())} "
        f"(model types {sorted({t for a in _ADAPTERS for t in a.model_types})}). "
        "Add one by subclassing vis_steer_lens.adapters.VLMAdapter and calling register_adapter."
    )


def vision_tower_config(
    tower: nn.Module, model_name: str | None = None, hf_prefix: str = GEMMA3_HF_PREFIX
) -> HookedViTConfig:
    """Describe a bare Hugging Face vision tower for :class:`~vis_steer_lens.HookedViT`."""
    model_type = getattr(getattr(tower, "config", None), "model_type", None)
    if model_type != "siglip_vision_model":
        raise UnsupportedModelError(
            f"HookedViT supports SigLIP vision towers (model_type 'siglip_vision_model'), got {type(tower).__name__} "
            f"with model_type {model_type!r}."
        )
    name = model_name or getattr(tower.config, "_name_or_path", "") or "unnamed"
    return siglip_config(tower, name, hf_prefix)


__all__ = [
    "EMPTY_IMAGES",
    "Gemma3Adapter",
    "UnsupportedModelError",
    "VLMAdapter",
    "adapter_for",
    "register_adapter",
    "supported_families",
    "vision_tower_config",
]
