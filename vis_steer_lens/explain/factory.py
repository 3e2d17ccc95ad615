"""One entry point that builds any explainer by method name (used by ``compare`` and the CLI)."""

from __future__ import annotations

from typing import Any

from vis_steer_lens.explain.settings import (
    METHODS,
    HybridSettings,
    SteeringSettings,
    TopKSettings,
    settings_for,
)
from vis_steer_lens.explain.steering import SteeringExplainer
from vis_steer_lens.explain.topk import SteeringInformedTopKExplainer, TopKExplainer


def make_explainer(
    method: str,
    model: Any,
    sae: Any,
    *,
    mined: Any = None,
    settings: SteeringSettings | TopKSettings | HybridSettings | None = None,
    coefficient: float | str | None = None,
    empty_image: str | None = None,
    k_images: int | None = None,
    display: str | None = None,
    batch_size: int | None = None,
    **common: Any,
):
    """Build the explainer of ``method`` with its method-specific settings picked out.

    Args:
        method: ``"steering"``, ``"topk"`` or ``"hybrid"`` (Steering-informed Top-k).
        model: The subject (and explainer) HookedVLM.
        sae: The SAE whose features are explained.
        mined: Mined top activations; required for ``"topk"`` and ``"hybrid"``.
        settings: The method's settings (:class:`SteeringSettings`, :class:`TopKSettings` or
            :class:`HybridSettings`, whose fields say their units). Instead of it, the loose
            keywords below, each method taking what is its own (:func:`settings_for`):
        coefficient: Steering's absolute scale (or ``"auto"``); the hybrid's multiple of the
            image's patch norm (``"auto"``: its default, 1.0). Top-k ignores it.
        empty_image: Empty image of ``"steering"``.
        k_images: Top images per prompt (``"topk"``, ``"hybrid"``).
        display: ``"mask"`` or ``"heatmap"`` (``"topk"``, ``"hybrid"``).
        batch_size: Features per batch.
        **common: Settings every explainer takes: ``prompt``, ``max_new_tokens``, ``direction``,
            ``seed``.

    Raises:
        ValueError: For an unknown method, or Top-k / hybrid without ``mined``.
    """
    if settings is None:
        settings = settings_for(
            method,
            coefficient=coefficient,
            empty_image=empty_image,
            k_images=k_images,
            display=display,
            batch_size=batch_size,
        )
    elif not isinstance(settings, type(settings_for(method))) or (
        method == "topk" and isinstance(settings, HybridSettings)
    ):
        raise ValueError(
            f"method={method!r} takes {type(settings_for(method)).__name__}, got {type(settings).__name__}."
        )
    if method == "steering":
        return SteeringExplainer(
            model,
            sae,
            coefficient=settings.coefficient,
            empty_image=settings.empty_image,
            batch_size=settings.batch_size,
            **common,
        )
    if mined is None:
        raise ValueError(f"method={method!r} needs mined top activations (mine_top_activations).")
    topk = dict(sae=sae, k_images=settings.k_images, display=settings.display, batch_size=settings.batch_size)
    if method == "topk":
        return TopKExplainer(mined, model, **topk, **common)
    return SteeringInformedTopKExplainer(
        mined, model, coefficient=settings.patch_norm_multiple, **topk, **common
    )


__all__ = ["METHODS", "make_explainer"]
