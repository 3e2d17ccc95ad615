"""Model-family adapters: the only place that knows a family's Hugging Face layout.

Importing this package registers the built-in families (Gemma 3, InternVL3) with
:mod:`vis_steer_lens.families`.
"""

from __future__ import annotations

from vis_steer_lens.adapters.base import EMPTY_IMAGES, VLMAdapter
from vis_steer_lens.adapters.gemma3 import GEMMA3_HOOK_NAMES, Gemma3Adapter
from vis_steer_lens.adapters.internvl3 import INTERNVL3_HOOK_NAMES, InternVL3Adapter
from vis_steer_lens.families import (
    UnsupportedModelError,
    adapter_for,
    adapter_for_tower,
    get_adapter,
    register_adapter,
    supported_families,
)

# Registered in reverse order of preference: the last one registered is tried first.
register_adapter(InternVL3Adapter())
register_adapter(Gemma3Adapter())

__all__ = [
    "EMPTY_IMAGES",
    "GEMMA3_HOOK_NAMES",
    "INTERNVL3_HOOK_NAMES",
    "Gemma3Adapter",
    "InternVL3Adapter",
    "UnsupportedModelError",
    "VLMAdapter",
    "adapter_for",
    "adapter_for_tower",
    "get_adapter",
    "register_adapter",
    "supported_families",
]
