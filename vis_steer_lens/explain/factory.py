"""One entry point that builds any explainer by method name (used by ``compare`` and the CLI)."""

from __future__ import annotations

from typing import Any

from vis_steer_lens.explain.steering import SteeringExplainer
from vis_steer_lens.explain.topk import SteeringInformedTopKExplainer, TopKExplainer

METHODS = ("steering", "topk", "hybrid")


def make_explainer(
    method: str,
    model: Any,
    sae: Any,
    *,
    mined: Any = None,
    coefficient: float | str = "auto",
    empty_image: str = "white",
    k_images: int = 5,
    display: str = "mask",
    batch_size: int = 32,
    **common: Any,
):
    """Build the explainer of ``method`` with its method-specific settings picked out.

    Args:
        method: ``"steering"``, ``"topk"`` or ``"hybrid"`` (Steering-informed Top-k).
        model: The subject (and explainer) HookedVLM.
        sae: The SAE whose features are explained.
        mined: Mined top activations; required for ``"topk"`` and ``"hybrid"``.
        coefficient: Steering coefficient (``"steering"``, ``"hybrid"``; Top-k ignores it).
        empty_image: Empty image of ``"steering"``.
        k_images: Top images per prompt (``"topk"``, ``"hybrid"``).
        display: ``"mask"`` or ``"heatmap"`` (``"topk"``, ``"hybrid"``).
        batch_size: Features per ``generate`` call.
        **common: Settings every explainer takes: ``prompt``, ``max_new_tokens``, ``direction``,
            ``seed``.

    Raises:
        ValueError: For an unknown method, or Top-k / hybrid without ``mined``.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; expected one of {list(METHODS)}.")
    if method == "steering":
        return SteeringExplainer(
            model, sae, coefficient=coefficient, empty_image=empty_image, batch_size=batch_size, **common
        )
    if mined is None:
        raise ValueError(f"method={method!r} needs mined top activations (mine_top_activations).")
    topk = dict(sae=sae, k_images=k_images, display=display, batch_size=batch_size, **common)
    if method == "topk":
        return TopKExplainer(mined, model, **topk)
    return SteeringInformedTopKExplainer(mined, model, coefficient=coefficient, **topk)


__all__ = ["METHODS", "make_explainer"]
