"""Checks that an SAE fits a model, and that feature ids fit an SAE."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from sae_lens import SAE

from vis_steer_lens.hook_names import UnknownHookNameError


class SAEModelMismatchError(ValueError):
    """An SAE whose hook or input width does not fit the model it is used with."""


class FeatureIndexError(IndexError, ValueError):
    """Feature ids outside ``0 .. d_sae - 1``."""


def sae_hook_name(sae: SAE) -> str:
    """The hook an SAE reads, from its metadata (``cfg.metadata.hook_name``)."""
    hook_name = sae.cfg.metadata.hook_name
    if not hook_name:
        raise SAEModelMismatchError(
            "The SAE's cfg.metadata has no hook_name, so where it belongs is unknown. Set it, e.g. "
            "sae.cfg.metadata.hook_name = 'blocks.16.hook_resid_post'."
        )
    return hook_name


def check_sae_fits(sae: SAE, model: Any) -> str:
    """Check that an SAE can read and replace the activation at its hook of ``model``.

    Args:
        sae: A ``sae_lens.SAE`` with ``cfg.metadata.hook_name`` in any naming convention.
        model: A HookedViT or HookedVLM.

    Returns:
        The SAE's hook as a HookedViT hook name.

    Raises:
        SAEModelMismatchError: If the hook does not exist in the model or its width is not
            the SAE's ``d_in``.
    """
    vit = getattr(model, "vision", model)
    hook_name = sae_hook_name(sae)
    try:
        resolved = vit.resolve_hook_name(hook_name)
    except UnknownHookNameError as err:
        raise SAEModelMismatchError(
            f"The SAE's hook does not exist in {vit.cfg.model_name!r}: {err}"
        ) from None
    width = vit.hook_width(resolved)
    if sae.cfg.d_in != width:
        raise SAEModelMismatchError(
            f"The SAE reads {resolved!r} with d_in={sae.cfg.d_in}, but that activation of "
            f"{vit.cfg.model_name!r} is {width} wide. Was the SAE trained on another model "
            f"(its metadata says model_name={sae.cfg.metadata.model_name!r})?"
        )
    return resolved


def check_sae_tower(sae: SAE, model: Any) -> None:
    """Check that ``model``'s vision tower is the one the SAE was trained on, where the SAE says.

    An SAE whose metadata records a ``tower_fingerprint`` (:meth:`HookedViT.tower_fingerprint`)
    fits any model with that exact tower: the same SAE explains Gemma 3 4B, 12B and 27B, whose
    towers are one. SAEs without a fingerprint (e.g. converted releases) are not checked.

    Raises:
        SAEModelMismatchError: If the tower has other weights than the SAE's.
    """
    recorded = sae.cfg.metadata.get("tower_fingerprint")
    if not recorded:
        return
    vit = getattr(model, "vision", model)
    actual = vit.tower_fingerprint()
    if actual != recorded:
        raise SAEModelMismatchError(
            f"The SAE was trained on a vision tower with fingerprint {recorded} "
            f"(model_name={sae.cfg.metadata.model_name!r}), but {vit.cfg.model_name!r} has tower {actual}: "
            "the shapes fit, the weights differ, so its features mean nothing here. Use a model that shares "
            "the SAE's tower (Gemma 3 4B, 12B and 27B share one), or an SAE trained on this one."
        )


def check_feature_ids(sae: SAE | int, features: Iterable[int] | int | torch.Tensor) -> list[int]:
    """Validate feature ids against an SAE's width (an SAE, or its ``d_sae``).

    Returns:
        The ids as a list of Python ints.

    Raises:
        FeatureIndexError: Naming the offending ids and the valid range.
    """
    if isinstance(features, torch.Tensor):
        ids = [int(f) for f in features.flatten().tolist()]
    elif isinstance(features, int):
        ids = [features]
    else:
        ids = [int(f) for f in features]
    d_sae = sae if isinstance(sae, int) else sae.cfg.d_sae
    bad = [f for f in ids if not 0 <= f < d_sae]
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
        raise FeatureIndexError(
            f"Feature ids out of range for an SAE with d_sae={d_sae} (valid 0..{d_sae - 1}): {shown}."
        )
    return ids
