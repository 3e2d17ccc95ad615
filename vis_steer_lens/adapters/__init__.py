"""Model-family adapters: the only place that knows a family's Hugging Face layout.

Importing this package registers the built-in families (Gemma 3, InternVL3, Qwen2-VL, Qwen2.5-VL, LLaVA-1.5,
LLaVA-NeXT, LLaVA-OneVision, PaliGemma, and the vision-only towers CLIP, SigLIP, DINOv2, DINOv2 with
registers) with
:mod:`vis_steer_lens.families`.
"""

from __future__ import annotations

from vis_steer_lens.adapters.base import EMPTY_IMAGES, VLMAdapter
from vis_steer_lens.adapters.gemma3 import GEMMA3_HOOK_NAMES, Gemma3Adapter
from vis_steer_lens.adapters.internvl3 import INTERNVL3_HOOK_NAMES, InternVL3Adapter
from vis_steer_lens.adapters.llava import LLAVA_HOOK_NAMES, LlavaAdapter
from vis_steer_lens.adapters.llava_next import LLAVA_NEXT_HOOK_NAMES, LlavaNextAdapter
from vis_steer_lens.adapters.llava_onevision import LLAVA_ONEVISION_HOOK_NAMES, LlavaOnevisionAdapter
from vis_steer_lens.adapters.paligemma import PALIGEMMA_HOOK_NAMES, PaliGemmaAdapter
from vis_steer_lens.adapters.qwen2_vl import QWEN2_VL_HOOK_NAMES, Qwen2VLAdapter, Qwen25VLAdapter
from vis_steer_lens.adapters.towers import (
    TOWER_ADAPTERS,
    ClipTowerAdapter,
    Dinov2TowerAdapter,
    Dinov2WithRegistersTowerAdapter,
    SiglipTowerAdapter,
    VisionTowerAdapter,
)
from vis_steer_lens.families import (
    UnsupportedModelError,
    adapter_for,
    adapter_for_tower,
    get_adapter,
    register_adapter,
    supported_families,
)

# Registered in reverse order of preference: the last one registered is tried first (a bare SigLIP
# tower gets Gemma 3's adapter, not PaliGemma's: both wrap it the same way; a bare CLIP tower gets
# LLaVA-1.5's, not LLaVA-NeXT's, whose tiling is the VLM's, not the tower's). The vision-only towers
# come first, so a bare CLIP or SigLIP tower keeps LLaVA's or Gemma 3's adapter unless named by family=.
for _tower_adapter in TOWER_ADAPTERS:
    register_adapter(_tower_adapter)
register_adapter(LlavaOnevisionAdapter())
register_adapter(LlavaNextAdapter())
register_adapter(PaliGemmaAdapter())
register_adapter(LlavaAdapter())
register_adapter(Qwen25VLAdapter())
register_adapter(Qwen2VLAdapter())
register_adapter(InternVL3Adapter())
register_adapter(Gemma3Adapter())

__all__ = [
    "EMPTY_IMAGES",
    "GEMMA3_HOOK_NAMES",
    "INTERNVL3_HOOK_NAMES",
    "Gemma3Adapter",
    "InternVL3Adapter",
    "LLAVA_HOOK_NAMES",
    "LlavaAdapter",
    "LLAVA_NEXT_HOOK_NAMES",
    "LLAVA_ONEVISION_HOOK_NAMES",
    "LlavaNextAdapter",
    "LlavaOnevisionAdapter",
    "PALIGEMMA_HOOK_NAMES",
    "PaliGemmaAdapter",
    "QWEN2_VL_HOOK_NAMES",
    "Qwen25VLAdapter",
    "Qwen2VLAdapter",
    "UnsupportedModelError",
    "VLMAdapter",
    "VisionTowerAdapter",
    "ClipTowerAdapter",
    "SiglipTowerAdapter",
    "Dinov2TowerAdapter",
    "Dinov2WithRegistersTowerAdapter",
    "adapter_for",
    "adapter_for_tower",
    "get_adapter",
    "register_adapter",
    "supported_families",
]
