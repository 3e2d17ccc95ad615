"""Memory budgets: how much is free, and how many images or features fit in a batch.

``batch_size="auto"`` (mining and the explainers) picks the largest batch whose estimated peak
fits in a share of the free memory of the device the work runs on: the GPU's free memory
(``torch.cuda.mem_get_info``) or, on the CPU, the machine's available RAM (``MemAvailable``).
The estimates are built from the model's shapes (tokens, widths, heads, layers), so no trial
batch is run; they count what a batch holds at its peak (one block's temporaries, the KV cache,
the steered image tokens, the prompt's attention), not the weights, which are already resident.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

#: Share of the free memory a batch may take (the rest is headroom for the allocator and others).
DEFAULT_BUDGET_FRACTION = 0.6
#: Largest batch "auto" picks (beyond this, throughput stops improving).
MAX_AUTO_BATCH = 256


def available_bytes(device: str | torch.device | None = None) -> int:
    """Free memory on ``device``: a CUDA device's free memory, or the machine's available RAM."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    pages, page_size = os.sysconf("SC_AVPHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    return int(pages * page_size)


def peak_rss_bytes(reset: bool = False) -> int:
    """This process's peak resident memory in bytes (after ``reset``: its current resident memory).

    Linux's ``VmHWM``, reset through ``/proc/self/clear_refs``, so a measurement can start after
    the setup. Not ``getrusage``'s ``ru_maxrss``: in a process started from a larger one (a test
    session) that starts at the parent's peak and hides any growth below it. Falls back to it
    without ``/proc``.
    """
    import resource

    try:
        if reset:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["VmHWM"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


@dataclass(frozen=True)
class TowerShape:
    """What a vision tower's activations cost: its depth, tokens per image, widths and dtype."""

    n_layers: int
    tokens: int
    d_model: int
    d_mlp: int
    n_heads: int
    element_size: int

    @classmethod
    def of(cls, vit: Any, patches: int | None = None) -> TowerShape:
        """The shape of a :class:`~vis_steer_lens.HookedViT` (or a HookedVLM's tower).

        Args:
            vit: The tower.
            patches: Patches of the image to cost. By default a fixed grid's ``cfg.n_patches``;
                on a native-resolution tower the most its image processor allows one image
                (:meth:`~vis_steer_lens.HookedViT.max_patches_per_image`), the bound, not a typical image.
        """
        vit = getattr(vit, "vision", vit)
        cfg = vit.cfg
        if patches is None:
            patches = cfg.n_patches
            if cfg.packed and vit.image_processor is not None:
                patches = vit.max_patches_per_image(vit.image_processor)
        return cls(
            n_layers=int(cfg.n_layers),
            tokens=int(patches + cfg.n_prefix_tokens),
            d_model=int(cfg.d_model),
            d_mlp=int(cfg.d_mlp),
            n_heads=int(cfg.n_heads),
            element_size=_element_size(vit.dtype),
        )


@dataclass(frozen=True)
class TextShape:
    """What a language model's generation costs: depth, widths, heads, vocabulary and dtype."""

    n_layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    element_size: int

    @classmethod
    def of_config(cls, config: Any, dtype: torch.dtype) -> TextShape:
        """From a VLM's (or its language model's) Hugging Face config."""
        text = getattr(config, "text_config", config)
        heads = int(text.num_attention_heads)
        return cls(
            n_layers=int(text.num_hidden_layers),
            hidden=int(text.hidden_size),
            intermediate=int(text.intermediate_size),
            heads=heads,
            kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
            head_dim=int(getattr(text, "head_dim", None) or text.hidden_size // heads),
            vocab=int(text.vocab_size),
            element_size=_element_size(dtype),
        )


def tower_bytes(tower: TowerShape, from_layer: int = 0, attention_matrix: bool = False) -> int:
    """Peak bytes one image adds to a forward through the tower's blocks ``from_layer ..``.

    The blocks run one after another under ``no_grad``, so the peak is one block's temporaries
    ``[tokens, 6 d_model + 2 d_mlp]`` plus the residual stream kept between blocks. HookedViT
    attends with ``scaled_dot_product_attention``, whose fused kernels never hold the
    ``[heads, tokens, tokens]`` matrix; it exists only while a hook reads ``attn.hook_pattern`` or
    ``attn.hook_attn_scores`` (``attention_matrix=True`` counts it). Measured at Gemma 3's tower
    (4096 tokens, float32, CPU): 261 MiB per image against this estimate's 278 MiB.
    """
    if from_layer >= tower.n_layers:
        return 0
    size, tokens = tower.element_size, tower.tokens
    block = tokens * (6 * tower.d_model + 2 * tower.d_mlp) * size
    attention = tower.n_heads * tokens * tokens * max(size, 4) if attention_matrix else 0
    return int(block + attention + 2 * tokens * tower.d_model * size)


def tower_bytes_per_image(vit: Any, from_layer: int = 0) -> int:
    """:func:`tower_bytes` of a HookedViT."""
    return tower_bytes(TowerShape.of(vit), from_layer)


def mining_bytes(tower: TowerShape, d_in: int) -> int:
    """Peak bytes one image adds to mining: the tower plus its float32 activations at the hook.

    The SAE's codes are encoded a block at a time (a fixed cost, not per image), so they are not
    counted here.
    """
    return tower_bytes(tower) + tower.tokens * int(d_in) * 4


def mining_bytes_per_image(vit: Any, sae: Any) -> int:
    """:func:`mining_bytes` of a HookedViT and an SAE."""
    return mining_bytes(TowerShape.of(vit), int(sae.cfg.d_in))


def language_bytes(text: TextShape, prompt_tokens: int, new_tokens: int) -> int:
    """Peak bytes one generated row adds in the language model: its KV cache over the whole
    answer, one layer's prefill temporaries ``[prompt, 4 d + 3 d_ff]``, an attention matrix and
    the last position's logits."""
    size = text.element_size
    kv_cache = text.n_layers * 2 * text.kv_heads * text.head_dim * (prompt_tokens + new_tokens) * size
    prefill = prompt_tokens * (4 * text.hidden + 3 * text.intermediate) * size
    attention = text.heads * prompt_tokens * prompt_tokens * max(size, 4)
    return int(kv_cache + prefill + attention + text.vocab * 4)


def image_tokens_per_image(vlm: Any, patches: int | None = None) -> int:
    """Soft tokens one image becomes in ``vlm``'s prompts.

    Counted in a one-image prompt of the empty image steering starts from. On a native-resolution
    tower the count grows with the image: ``patches`` scales it to an image of that many patches
    (by default the most the image processor allows), at the empty image's soft tokens per patch.
    """
    image = vlm.empty_image("white")
    inputs = vlm.prompt_inputs([image], "x", device="cpu")
    soft = int((inputs["input_ids"] == vlm.image_token_id).sum())
    if not vlm.vision.cfg.packed:
        return soft
    _, tower = vlm.split_inputs(inputs)
    h, w = vlm.image_geometry(**tower).grid(0)
    if patches is None:
        patches = TowerShape.of(vlm).tokens - vlm.vision.cfg.n_prefix_tokens
    return -(-soft * int(patches) // (h * w))


def explain_bytes(
    tower: TowerShape,
    text: TextShape,
    soft_tokens: int,
    images_per_row: int,
    new_tokens: int,
    from_layer: int = 0,
    text_tokens: int = 64,
) -> int:
    """Peak bytes one explained feature adds to a batch: its images through the tower from
    ``from_layer`` (1 steered empty image, or the ``k`` top images), then its prompt of
    ``images_per_row`` images of ``soft_tokens`` each and ``text_tokens`` words in the language
    model."""
    image_tokens = images_per_row * soft_tokens
    steered = image_tokens * text.hidden * 4
    images = images_per_row * tower_bytes(tower, from_layer)
    return int(images + steered + language_bytes(text, image_tokens + text_tokens, new_tokens))


def explain_bytes_per_row(
    vlm: Any,
    images_per_row: int,
    new_tokens: int,
    from_layer: int = 0,
    text_tokens: int = 64,
    patches: int | None = None,
) -> int:
    """:func:`explain_bytes` of a HookedVLM, for images of ``patches`` patches each (default: a fixed
    grid's; on a native-resolution tower the processor's bound, see :meth:`TowerShape.of`)."""
    return explain_bytes(
        TowerShape.of(vlm, patches),
        TextShape.of_config(vlm.hf_model.config, vlm.dtype),
        image_tokens_per_image(vlm, patches),
        images_per_row,
        new_tokens,
        from_layer=from_layer,
        text_tokens=text_tokens,
    )


def auto_batch_size(
    bytes_per_item: int,
    device: str | torch.device | None = None,
    *,
    fraction: float = DEFAULT_BUDGET_FRACTION,
    limit: int = MAX_AUTO_BATCH,
    budget: int | None = None,
) -> int:
    """The largest batch of items of ``bytes_per_item`` that fits ``fraction`` of the free memory.

    Args:
        bytes_per_item: Estimated peak bytes per item (image or feature).
        device: Where the work runs.
        fraction: Share of the free memory to use.
        limit: The largest batch returned.
        budget: Bytes to fit in, instead of ``fraction`` of the free memory.

    Returns:
        At least 1 (a batch of one is always tried), at most ``limit``.
    """
    if budget is None:
        budget = int(available_bytes(device) * fraction)
    return int(max(1, min(limit, budget // max(1, int(bytes_per_item)))))


def check_batch_size(batch_size: Any, name: str = "batch_size") -> int | str:
    """``batch_size`` as given: an integer >= 1 or ``"auto"``.

    Raises:
        ValueError: Otherwise.
    """
    if batch_size == "auto":
        return "auto"
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{name} must be an integer >= 1 or 'auto', got {batch_size!r}.")
    return int(batch_size)


__all__ = [
    "DEFAULT_BUDGET_FRACTION",
    "TextShape",
    "TowerShape",
    "explain_bytes",
    "language_bytes",
    "mining_bytes",
    "tower_bytes",
    "auto_batch_size",
    "available_bytes",
    "check_batch_size",
    "explain_bytes_per_row",
    "image_tokens_per_image",
    "mining_bytes_per_image",
    "peak_rss_bytes",
    "tower_bytes_per_image",
]
