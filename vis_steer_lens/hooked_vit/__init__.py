"""HookedViT: a vision tower with TransformerLens hook points, sharing the Hugging Face weights.

The tower's forward pass is written out here (rather than hooking Hugging Face modules)
so that every activation a user may want to read or edit is one tensor at one
:class:`~transformer_lens.hook_points.HookPoint`, with TransformerLens semantics, and an
edit at any hook reaches everything downstream.

Nothing here knows a model family. An adapter (:mod:`vis_steer_lens.adapters`) describes its
tower as a :class:`HookedViTConfig` (shapes, prefix tokens such as a class token, norm kind,
layer scale, final norm) and hands over the Hugging Face modules as :class:`TowerParts`; the
blocks are built from those, sharing every parameter.

The package holds three concepts: :mod:`.config` (the tower described), :mod:`.components` (the
hooked blocks built over an adapter's modules) and :mod:`.model` (the tower and its hooks).
"""

from vis_steer_lens.hooked_vit.components import (
    AttentionGroups,
    BlockParts,
    HookedAttention,
    HookedMLP,
    HookedNorm,
    HookedViTBlock,
    ShapedHookPoint,
    TokenContext,
    TowerParts,
    parts_from_config,
)
from vis_steer_lens.hooked_vit.config import NORM_TYPES, POSITIONAL_KINDS, HookedViTConfig
from vis_steer_lens.hooked_vit.model import HookedViT, HookNameResolutionMixin

__all__ = [
    "AttentionGroups",
    "NORM_TYPES",
    "POSITIONAL_KINDS",
    "BlockParts",
    "HookNameResolutionMixin",
    "HookedAttention",
    "HookedMLP",
    "HookedNorm",
    "HookedViT",
    "HookedViTBlock",
    "HookedViTConfig",
    "ShapedHookPoint",
    "TokenContext",
    "TowerParts",
    "parts_from_config",
]
