"""Tiny random vision-language models with working processors, for tests (ours and yours).

As TransformerLens and SAELens ship test helpers, this module builds models of the real
architectures at toy size, in memory and without the network:

>>> from vis_steer_lens.testing import tiny_vlm
>>> vlm = tiny_vlm("internvl3")  # a HookedVLM over a random InternVLForConditionalGeneration
>>> inputs = vlm.prompt_inputs([image], "What is in the image?")  # doctest: +SKIP

The weights are random but not at their initial values: norm weights, layer scales, the class
token and position embeddings are drawn away from transformers' constant inits, and the
projector is never zero, so every vision edit reaches the logits and an equivalence test
against Hugging Face can fail where a shortcut would be taken.

:func:`random_vlm` builds the released architectures themselves (Gemma 3 4B/12B/27B,
InternVL3-14B, Qwen2.5-VL 3B/7B) with random weights, their depth and vocabulary optionally cut,
and a processor with the family's special tokens and chat structure at the real image size:

>>> vlm = random_vlm("gemma-3-4b", n_vision_layers=2, n_text_layers=1, vocab_size=4096)  # doctest: +SKIP
>>> sae = random_sae(vlm, "blocks.1.hook_resid_post")  # 8192 features, k=25, as the paper's  # doctest: +SKIP

Vision-only towers (CLIP, SigLIP, DINOv2, DINOv2 with registers) come from
:mod:`vis_steer_lens.testing.towers`: ``tiny_vit("dinov2_with_registers")`` is a HookedViT with its
image processor, ``random_vit("dinov2-with-registers-base", n_layers=2)`` a released one.

Each family's models come from its :class:`~vis_steer_lens.testing.builders.ModelBuilder`
(:mod:`vis_steer_lens.testing.gemma3`, ``.internvl3``, ``.qwen2_vl``: the tiny configs and the
released ``config.json`` tables), registered by family name with :func:`register_builder`; the
production adapters never import this package. A family added with
:func:`vis_steer_lens.register_adapter` gets test models by registering a builder too (see
:mod:`vis_steer_lens.testing.builders`).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from vis_steer_lens.testing import gemma3, internvl3, llava, llava_next, paligemma, qwen2_vl
from vis_steer_lens.testing.builders import ModelBuilder, builder_families, get_builder, register_builder
from vis_steer_lens.testing.tokenizers import fit_token_ids, word_tokenizer
from vis_steer_lens.testing.towers import (
    RELEASED_TOWERS,
    TINY_TOWER_FAMILIES,
    random_hf_tower,
    random_vit,
    tiny_hf_tower,
    tiny_vit,
)

# Each family module's builders, registered in reverse order as the adapters are (the last one
# registered is listed first).
for _builder in (
    *llava_next.BUILDERS,
    *paligemma.BUILDERS,
    *llava.BUILDERS,
    *qwen2_vl.BUILDERS,
    *internvl3.BUILDERS,
    *gemma3.BUILDERS,
):
    register_builder(_builder)

#: The shipped families :func:`tiny_vlm` builds (a registered builder adds its own, see
#: :func:`builder_families`).
TINY_FAMILIES = (
    "gemma3",
    "internvl3",
    "qwen2_vl",
    "qwen2_5_vl",
    "llava",
    "paligemma",
    "llava_next",
    "llava_onevision",
)


def perturb_constant_parameters(modules: list[nn.Module], seed: int) -> None:
    """Draw every parameter that holds one repeated value (a norm's ones, a bias's zeros, a layer
    scale, a zero class token or projector) around that value, so no weight sits at its init."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in modules:
            for param in module.parameters():
                if not param.numel():
                    continue
                low, high = torch.aminmax(param.detach())  # no full-size temporary for large weights
                if bool(low == high):
                    value = float(low)
                    scale = 0.3 if value == 0 else 0.5 * abs(value)
                    param.copy_(value + scale * torch.randn(param.shape, generator=gen))


def tiny_hf_vlm(
    family: str,
    *,
    seed: int = 0,
    vision_layers: int = 2,
    text_width: int = 32,
    norm_type: str = "layer_norm",
    qk_norm: bool = False,
) -> tuple[nn.Module, Any]:
    """A tiny random Hugging Face VLM of ``family`` and its processor (32x32 images, 8-px patches).

    Args:
        family: ``"gemma3"`` (SigLIP, 16 patches, 4 soft tokens), ``"internvl3"`` (InternViT
            with a class token and layer scale, 16 patches, 4 soft tokens, Qwen2 text),
            ``"qwen2_vl"`` or ``"qwen2_5_vl"`` (native resolution: 8-px patches merged 2 x 2, images
            resized to 32-64 px a side at their own aspect ratio, packed into one sequence; Qwen2.5-VL
            with 32-px attention windows and full attention in every second block).
        seed: Seeds the weights.
        vision_layers: Vision encoder blocks.
        text_width: Hidden size of the language model (a "larger" model of the same family
            keeps the tower and widens this).
        norm_type: InternViT's ``"layer_norm"`` or ``"rms_norm"`` (ignored for Gemma 3).
        qk_norm: InternViT's q/k norm (ignored for Gemma 3).

    Returns:
        ``(model, processor)``: the model in eval mode, float32.

    Raises:
        UnsupportedModelError: If no builder is registered for ``family`` (naming those that are).
    """
    builder = get_builder(family)
    adapter = builder.adapter
    torch.manual_seed(seed)
    model, processor = builder.build_tiny(
        vision_layers=vision_layers, text_width=text_width, norm_type=norm_type, qk_norm=qk_norm
    )
    perturb_constant_parameters([adapter.tower(model), adapter.projector(model)], seed)
    return model.eval(), processor


def tiny_vlm(family: str = "gemma3", **kwargs: Any):
    """A :class:`~vis_steer_lens.HookedVLM` over :func:`tiny_hf_vlm`'s model, with its processor.

    Args:
        family: ``"gemma3"``, ``"internvl3"``, ``"qwen2_vl"`` or ``"qwen2_5_vl"``.
        **kwargs: ``seed``, ``vision_layers``, ``text_width``, ``norm_type``, ``qk_norm`` (see
            :func:`tiny_hf_vlm`).
    """
    from vis_steer_lens.hooked_vlm import HookedVLM

    model, processor = tiny_hf_vlm(family, **kwargs)
    return HookedVLM.from_hf(model, processor=processor, model_name=f"tiny-{family}")


def tiny_sae(
    vit: Any, hook_name: str = "blocks.0.hook_resid_post", d_sae: int = 64, k: int = 4, seed: int = 0
):
    """A random SAELens TopK SAE reading ``hook_name`` of ``vit`` (a HookedViT or HookedVLM).

    Unit-norm decoder rows; vision metadata of the model's family, with its tower fingerprint.
    """
    from sae_lens import TopKSAE, TopKSAEConfig

    from vis_steer_lens.saes.metadata import set_vision_metadata, vision_sae_metadata

    vit = getattr(vit, "vision", vit)
    hook = vit.parse_hook_name(hook_name)
    gen = torch.Generator().manual_seed(seed)
    sae = TopKSAE(TopKSAEConfig(d_in=hook.width, d_sae=d_sae, k=k))
    with torch.no_grad():
        for param in sae.parameters():
            param.copy_(0.3 * torch.randn(param.shape, generator=gen))
        sae.W_dec.div_(sae.W_dec.norm(dim=-1, keepdim=True))
    metadata = vision_sae_metadata(
        hook.name,
        vit.cfg.model_name,
        vit.cfg.n_layers,
        family=vit.cfg.family,
        tower_fingerprint=vit.tower_fingerprint(),
    )
    return set_vision_metadata(sae, metadata)


def released_models() -> dict[str, str]:
    """Released models :func:`random_vlm` builds, name → family (from the registered builders)."""
    return {name: family for family in builder_families() for name in get_builder(family).released_configs}


def _release_builder(name: str) -> ModelBuilder:
    models = released_models()
    if name not in models:
        raise ValueError(f"random_vlm builds the released models {sorted(models)}, got {name!r}.")
    return get_builder(models[name])


def random_hf_vlm(
    name: str,
    n_vision_layers: int | None = None,
    n_text_layers: int | None = None,
    vocab_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    save_to: str | os.PathLike | None = None,
    max_shard_size: str | int = "200MB",
    device: str | torch.device | None = None,
) -> tuple[nn.Module, Any]:
    """A released VLM architecture with random weights, and a processor at its real image size.

    The configuration is the release's (its builder's ``released_configs``, written out from the
    released ``config.json``); only the depth and the vocabulary can be cut. The special tokens
    keep their released ids where the vocabulary holds them and move to its top otherwise
    (:func:`fit_token_ids`), in the tokenizer and in the config alike. The model is built
    directly in ``dtype`` on ``device`` (one copy of the weights, never a float32 one first);
    every constant-initialised parameter (norms, biases, layer scales, Gemma 3's zero projector)
    is drawn away from its init and the projector maps at unit gain, so the greedy answers
    depend on the image.

    Args:
        name: ``"gemma-3-4b"``, ``"gemma-3-12b"``, ``"gemma-3-27b"``, ``"internvl3-14b"``,
            ``"qwen2.5-vl-3b"`` or ``"qwen2.5-vl-7b"`` (:func:`released_models`).
        n_vision_layers: Vision encoder blocks (default: the release's).
        n_text_layers: Language model layers (default: the release's).
        vocab_size: Vocabulary size (default: the release's).
        dtype: Weight dtype.
        seed: Seeds the weights (the caller's global RNG state is left as it was).
        save_to: Also write the model (safetensors, in shards of ``max_shard_size``) and the
            processor to this folder, for ``from_pretrained``.
        max_shard_size: Shard size for ``save_to``.
        device: Where the weights are built (default CPU).

    Returns:
        ``(model, processor)``, the model in eval mode.
    """
    builder = _release_builder(name)
    target = torch.device(device or "cpu")
    with torch.random.fork_rng(devices=[target.index or 0] if target.type == "cuda" else []):
        torch.manual_seed(seed)
        model, processor = builder.build_random(
            name,
            n_vision_layers=n_vision_layers,
            n_text_layers=n_text_layers,
            vocab_size=vocab_size,
            dtype=dtype,
            device=device,
        )
    perturb_constant_parameters([model], seed)
    if save_to is not None:
        model.save_pretrained(save_to, max_shard_size=max_shard_size)
        processor.save_pretrained(save_to)
    return model.eval(), processor


def random_vlm(name: str, **kwargs: Any):
    """A :class:`~vis_steer_lens.HookedVLM` over :func:`random_hf_vlm`'s model and processor.

    Named ``random-<name>`` (so SAE metadata records a random model).

    Args:
        name: The release (see :func:`released_models`).
        **kwargs: ``n_vision_layers``, ``n_text_layers``, ``vocab_size``, ``dtype``, ``seed``,
            ``save_to``, ``max_shard_size``, ``device`` (see :func:`random_hf_vlm`).
    """
    from vis_steer_lens.hooked_vlm import HookedVLM

    model, processor = random_hf_vlm(name, **kwargs)
    return HookedVLM.from_hf(model, processor=processor, model_name=f"random-{name}")


def random_sae(
    vit: Any,
    hook_name: str,
    d_sae: int = 8192,
    k: int = 25,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
):
    """A random TopK SAE of the paper's shape (8192 features, k = 25) at ``hook_name`` of ``vit``.

    :func:`tiny_sae` at the paper's width, on the model's device: distinct unit-norm decoder
    rows, the tower's fingerprint in its metadata.
    """
    sae = tiny_sae(vit, hook_name, d_sae=d_sae, k=k, seed=seed)
    return sae.to(device=getattr(vit, "device", "cpu"), dtype=dtype)


__all__ = [
    "RELEASED_TOWERS",
    "TINY_TOWER_FAMILIES",
    "random_hf_tower",
    "random_vit",
    "tiny_hf_tower",
    "tiny_vit",
    "TINY_FAMILIES",
    "ModelBuilder",
    "builder_families",
    "fit_token_ids",
    "get_builder",
    "perturb_constant_parameters",
    "random_hf_vlm",
    "random_sae",
    "random_vlm",
    "register_builder",
    "released_models",
    "tiny_hf_vlm",
    "tiny_sae",
    "tiny_vlm",
    "word_tokenizer",
]
