"""Test towers of the vision-only families (CLIP, SigLIP, DINOv2, DINOv2 with registers): tiny random
ones with a working image processor (:func:`tiny_vit`) and the released architectures with random
weights, their depth optionally cut (:func:`random_vit`).

>>> from vis_steer_lens.testing import tiny_vit
>>> vit = tiny_vit("dinov2_with_registers")  # a HookedViT: class token + 2 registers + 16 patches
>>> vit.cfg.n_prefix_tokens, vit.cfg.n_register_tokens
(3, 2)

Weights are drawn away from transformers' constant inits (norms, biases, layer scales, the class and
register tokens), so an equivalence test against transformers can fail where a shortcut is taken.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

#: The vision-only families :func:`tiny_vit` builds.
TINY_TOWER_FAMILIES = ("clip", "siglip", "dinov2", "dinov2_with_registers")

# transformers config class and tower class per family.
_CLASSES = {
    "clip": ("CLIPVisionConfig", "CLIPVisionModel"),
    "siglip": ("SiglipVisionConfig", "SiglipVisionModel"),
    "dinov2": ("Dinov2Config", "Dinov2Model"),
    "dinov2_with_registers": ("Dinov2WithRegistersConfig", "Dinov2WithRegistersModel"),
}

# 32x32 images in 8-px patches (16 patches), 32 wide, 4 heads.
_TINY_SHAPE = dict(hidden_size=32, num_attention_heads=4, image_size=32, patch_size=8)
_TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "clip": dict(_TINY_SHAPE, intermediate_size=64, hidden_act="quick_gelu"),
    "siglip": dict(_TINY_SHAPE, intermediate_size=64),
    "dinov2": dict(_TINY_SHAPE, mlp_ratio=2),
    "dinov2_with_registers": dict(_TINY_SHAPE, mlp_ratio=2, num_register_tokens=2),
}

# ---- the released towers, written from their published config.json files (recalled, not re-read
# from the hub: no network here; the values are those of the published architectures).
_DINOV2_BASE = dict(
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    mlp_ratio=4,
    image_size=518,
    patch_size=14,
    layerscale_value=1.0,
    layer_norm_eps=1e-6,
    hidden_act="gelu",
    qkv_bias=True,
    use_swiglu_ffn=False,
)

#: Released vision-only towers :func:`random_vit` builds: name → (family, config fields).
RELEASED_TOWERS: dict[str, tuple[str, dict[str, Any]]] = {
    "dinov2-base": ("dinov2", _DINOV2_BASE),
    "dinov2-with-registers-base": ("dinov2_with_registers", dict(_DINOV2_BASE, num_register_tokens=4)),
    "clip-vit-large-patch14": (
        "clip",
        dict(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            image_size=224,
            patch_size=14,
            projection_dim=768,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
        ),
    ),
    "siglip-so400m-patch14-384": (
        "siglip",
        dict(
            hidden_size=1152,
            intermediate_size=4304,
            num_hidden_layers=27,
            num_attention_heads=16,
            image_size=384,
            patch_size=14,
            hidden_act="gelu_pytorch_tanh",
            layer_norm_eps=1e-6,
        ),
    ),
    "siglip2-base-patch16-224": (
        "siglip",
        dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=224,
            patch_size=16,
            hidden_act="gelu_pytorch_tanh",
            layer_norm_eps=1e-6,
        ),
    ),
}

_IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
_CLIP = ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711])


def tower_image_processor(family: str, image_size: int) -> Any:
    """The family's image processor at ``image_size``: DINOv2's (shortest edge to 8/7 of the crop,
    centre crop, ImageNet statistics), CLIP's (shortest edge, centre crop, CLIP statistics), SigLIP's
    (resize to a square, mean and std 0.5)."""
    from transformers import BitImageProcessorPil, CLIPImageProcessorPil, SiglipImageProcessorPil

    if family.startswith("dinov2"):
        mean, std = _IMAGENET
        return BitImageProcessorPil(
            size={"shortest_edge": image_size * 8 // 7},
            crop_size={"height": image_size, "width": image_size},
            do_center_crop=True,
            image_mean=mean,
            image_std=std,
            do_convert_rgb=True,
        )
    if family == "clip":
        mean, std = _CLIP
        return CLIPImageProcessorPil(
            size={"shortest_edge": image_size},
            crop_size={"height": image_size, "width": image_size},
            image_mean=mean,
            image_std=std,
        )
    if family == "siglip":
        return SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
    raise ValueError(f"tower_image_processor knows the families {TINY_TOWER_FAMILIES}, got {family!r}.")


def _build(family: str, fields: dict[str, Any], dtype: torch.dtype, device: Any) -> nn.Module:
    import transformers

    if family not in _CLASSES:
        raise ValueError(f"Vision-only tower families are {TINY_TOWER_FAMILIES}, got {family!r}.")
    config_name, model_name = _CLASSES[family]
    config = getattr(transformers, config_name)(**fields)
    config._attn_implementation = "sdpa"
    with torch.device(device or "cpu"):
        return getattr(transformers, model_name)(config).to(dtype).eval()


def tiny_hf_tower(
    family: str = "dinov2_with_registers", *, seed: int = 0, layers: int = 2
) -> tuple[nn.Module, Any]:
    """A tiny random transformers tower of a vision-only family and its image processor.

    Args:
        family: ``"clip"``, ``"siglip"``, ``"dinov2"`` or ``"dinov2_with_registers"`` (2 registers).
        seed: Seeds the weights.
        layers: Encoder blocks.

    Returns:
        ``(tower, image_processor)``: 32x32 images in 8-px patches, float32, eval mode.
    """
    from vis_steer_lens.testing import perturb_constant_parameters

    if family not in _TINY_CONFIGS:
        raise ValueError(f"tiny_hf_tower builds the families {TINY_TOWER_FAMILIES}, got {family!r}.")
    torch.manual_seed(seed)
    tower = _build(family, dict(_TINY_CONFIGS[family], num_hidden_layers=layers), torch.float32, None)
    perturb_constant_parameters([tower], seed)
    return tower, tower_image_processor(family, 32)


def tiny_vit(family: str = "dinov2_with_registers", *, seed: int = 0, layers: int = 2):
    """A :class:`~vis_steer_lens.HookedViT` of the family's adapter over :func:`tiny_hf_tower`'s tower,
    its ``image_processor`` set (so images and integer tensors go in), named ``tiny-<family>``."""
    from vis_steer_lens.hooked_vit import HookedViT

    tower, image_processor = tiny_hf_tower(family, seed=seed, layers=layers)
    vit = HookedViT.from_hf(tower, model_name=f"tiny-{family}", family=family)
    vit.image_processor = image_processor
    return vit


def random_hf_tower(
    name: str,
    *,
    n_layers: int | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    device: Any = None,
) -> tuple[nn.Module, Any]:
    """A released vision-only tower (:data:`RELEASED_TOWERS`) with random weights, its depth optionally
    cut, and its image processor at the release's input size (DINOv2: 224-px crops, as released).

    Raises:
        ValueError: Naming the releases known, for another name.
    """
    from vis_steer_lens.testing import perturb_constant_parameters

    if name not in RELEASED_TOWERS:
        raise ValueError(f"random_vit builds the released towers {sorted(RELEASED_TOWERS)}, got {name!r}.")
    family, fields = RELEASED_TOWERS[name]
    fields = copy.deepcopy(fields)
    if n_layers is not None:
        if n_layers < 1:
            raise ValueError(f"A tower needs at least one layer, got {n_layers}.")
        fields["num_hidden_layers"] = n_layers
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        tower = _build(family, fields, dtype, device)
        perturb_constant_parameters([tower], seed)
    image_size = 224 if family.startswith("dinov2") else fields["image_size"]
    return tower, tower_image_processor(family, image_size)


def random_vit(name: str, **kwargs: Any):
    """A :class:`~vis_steer_lens.HookedViT` over :func:`random_hf_tower`'s tower, named ``random-<name>``."""
    from vis_steer_lens.hooked_vit import HookedViT

    tower, image_processor = random_hf_tower(name, **kwargs)
    vit = HookedViT.from_hf(tower, model_name=f"random-{name}", family=RELEASED_TOWERS[name][0])
    vit.image_processor = image_processor
    return vit


__all__ = [
    "RELEASED_TOWERS",
    "TINY_TOWER_FAMILIES",
    "random_hf_tower",
    "random_vit",
    "tiny_hf_tower",
    "tiny_vit",
    "tower_image_processor",
]
