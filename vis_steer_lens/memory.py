"""Memory budgets: how much is free, and how many images or features fit in a batch.

``batch_size="auto"`` (mining and the explainers) picks the largest batch whose estimated peak
fits in a share of the free memory of the device the work runs on: the GPU's free memory
(``torch.cuda.mem_get_info``) or, on the CPU, the machine's available RAM (``MemAvailable``).
The estimates are upper bounds built from the model's shapes (tokens, widths, heads, layers),
so no trial batch is run; they count what a batch holds at its peak (one block's temporaries,
an attention matrix, the KV cache, the steered image tokens), not the weights, which are
already resident.
"""

from __future__ import annotations

import os
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


def tower_bytes_per_image(vit: Any, from_layer: int = 0) -> int:
    """Peak bytes one image adds to a forward through the tower's blocks ``from_layer ..``.

    The blocks run one after another under ``no_grad``, so the peak is one block's temporaries
    ``[tokens, 6 d_model + 2 d_mlp]`` plus an attention matrix ``[heads, tokens, tokens]``
    (fused attention never materialises it; counting it keeps the bound safe), plus the
    residual stream kept between blocks.
    """
    cfg = vit.cfg
    if from_layer >= cfg.n_layers:
        return 0
    tokens = cfg.n_patches + cfg.n_prefix_tokens
    size = _element_size(vit.dtype)
    block = tokens * (6 * cfg.d_model + 2 * cfg.d_mlp) * size
    attention = cfg.n_heads * tokens * tokens * max(size, 4)
    return int(block + attention + 2 * tokens * cfg.d_model * size)


def mining_bytes_per_image(vit: Any, sae: Any) -> int:
    """Peak bytes one image adds to mining: the tower up to the SAE's hook plus its float32 activations.

    The SAE's codes are encoded a block at a time (a fixed cost, not per image), so they are not
    counted here.
    """
    tokens = vit.cfg.n_patches + vit.cfg.n_prefix_tokens
    return tower_bytes_per_image(vit) + tokens * int(sae.cfg.d_in) * 4


def language_bytes_per_row(vlm: Any, prompt_tokens: int, new_tokens: int) -> int:
    """Peak bytes one generated row adds in the language model: its KV cache over the whole
    answer, one layer's prefill temporaries ``[prompt, 4 d + 3 d_ff]``, an attention matrix and
    the last position's logits."""
    text = getattr(vlm.hf_model.config, "text_config", vlm.hf_model.config)
    size = _element_size(vlm.dtype)
    heads = int(text.num_attention_heads)
    kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
    length = prompt_tokens + new_tokens
    kv_cache = int(text.num_hidden_layers) * 2 * kv_heads * head_dim * length * size
    prefill = prompt_tokens * (4 * int(text.hidden_size) + 3 * int(text.intermediate_size)) * size
    attention = heads * prompt_tokens * prompt_tokens * max(size, 4)
    logits = int(text.vocab_size) * 4
    return int(kv_cache + prefill + attention + logits)


def image_tokens_per_image(vlm: Any) -> int:
    """Soft tokens one image becomes in ``vlm``'s prompts (counted in a one-image prompt)."""
    from PIL import Image

    inputs = vlm.prompt_inputs([Image.new("RGB", (8, 8))], "x")
    return int((inputs["input_ids"] == vlm.image_token_id).sum())


def explain_bytes_per_row(
    vlm: Any, images_per_row: int, new_tokens: int, from_layer: int = 0, text_tokens: int = 64
) -> int:
    """Peak bytes one explained feature adds to a batch: its images through the tower from
    ``from_layer`` (1 steered empty image, or the ``k`` top images), then its prompt of
    ``images_per_row`` images and ``text_tokens`` words in the language model."""
    soft = image_tokens_per_image(vlm)
    text = getattr(vlm.hf_model.config, "text_config", vlm.hf_model.config)
    image_tokens = images_per_row * soft
    steered = image_tokens * int(text.hidden_size) * 4
    tower = images_per_row * tower_bytes_per_image(vlm.vision, from_layer)
    return int(tower + steered + language_bytes_per_row(vlm, image_tokens + text_tokens, new_tokens))


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
    "auto_batch_size",
    "available_bytes",
    "check_batch_size",
    "explain_bytes_per_row",
    "image_tokens_per_image",
    "language_bytes_per_row",
    "mining_bytes_per_image",
    "peak_rss_bytes",
    "tower_bytes_per_image",
]
