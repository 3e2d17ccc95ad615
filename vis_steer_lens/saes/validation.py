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


class NonFiniteSAEError(ValueError):
    """An SAE with NaN or inf weights: its features' activations would be NaN, and a NaN takes a TopK
    slot from the other features in every patch."""


#: The value a left-out feature's encoder bias gets, so that it never fires (ReLU, TopK, JumpReLU).
_NEVER_FIRES = -1e4


def _feature_dim(name: str, tensor: torch.Tensor, d_sae: int) -> int | None:
    """Which dimension of a parameter indexes features (``None``: shared by every feature)."""
    if name.split(".")[-1].startswith("W_dec") and tensor.ndim == 2 and tensor.shape[0] == d_sae:
        return 0
    if tensor.ndim == 2 and tensor.shape[-1] == d_sae:
        return 1
    if tensor.ndim == 1 and tensor.shape[0] == d_sae:
        return 0
    return None


def nonfinite_weights(sae: SAE) -> tuple[list[int], list[str]]:
    """Where an SAE's weights are NaN or inf.

    Returns:
        ``(features, shared)``: the feature ids whose own weights (encoder column, decoder row,
        biases, thresholds) are not all finite, and the names of parameters shared by every
        feature (``b_dec``, ...) that are not.
    """
    d_sae = int(sae.cfg.d_sae)
    bad = torch.zeros(d_sae, dtype=torch.bool)
    shared = []
    for name, tensor in sae.state_dict().items():
        if not tensor.is_floating_point():
            continue
        finite = torch.isfinite(tensor)
        if bool(finite.all()):
            continue
        dim = _feature_dim(name, tensor, d_sae)
        if dim is None:
            shared.append(name)
            continue
        per_feature = ~finite.movedim(dim, 0).reshape(d_sae, -1).all(dim=1)
        bad |= per_feature.cpu()
    return bad.nonzero().flatten().tolist(), shared


def _shown(ids: list[int]) -> str:
    return ", ".join(map(str, ids[:10])) + (f" ... ({len(ids)} in all)" if len(ids) > 10 else "")


def check_sae_finite(sae: SAE, nonfinite: str = "error", source: Any = None) -> list[int]:
    """Refuse an SAE whose weights are NaN or inf, naming the features; or leave those features out.

    Args:
        sae: The SAE.
        nonfinite: ``"error"`` (refuse) or ``"drop"``: the features with non-finite weights are
            left out, in place: their weights are zeroed and their encoder bias made very negative,
            so they never fire and steer nothing; ``sae.cfg.metadata.dropped_features`` lists them
            and a warning says so.
        source: Where the SAE came from, for the message.

    Returns:
        The features left out (empty when every weight is finite).

    Raises:
        NonFiniteSAEError: Naming the features (or the shared parameter) with NaN or inf weights.
    """
    if nonfinite not in ("error", "drop"):
        raise ValueError(f"nonfinite must be 'error' or 'drop', got {nonfinite!r}.")
    features, shared = nonfinite_weights(sae)
    if not features and not shared:
        return []
    name = (
        source
        if source is not None
        else (sae.cfg.metadata.get("sae_id") or sae.cfg.metadata.get("hook_name"))
    )
    where = f"The SAE {str(name)!r}" if name else "The SAE"
    if shared:
        raise NonFiniteSAEError(
            f"{where} has NaN or inf values in {', '.join(shared)}, which every feature uses, so none of its "
            "activations can be trusted; fix or re-download the checkpoint."
        )
    if nonfinite == "error" or len(features) == sae.cfg.d_sae:
        leave_out = (
            " every feature is affected, so none can be left out"
            if len(features) == sae.cfg.d_sae
            else " or leave them out with --drop-nonfinite-features (load_sae(..., nonfinite='drop'))"
        )
        raise NonFiniteSAEError(
            f"{where} has NaN or inf weights in feature(s) {_shown(features)} of {sae.cfg.d_sae}: their "
            "activations would be NaN, and a NaN takes a TopK slot from the other features in every patch. "
            f"Fix or re-download the checkpoint,{leave_out}."
        )
    d_sae = int(sae.cfg.d_sae)
    index = torch.tensor(features)
    with torch.no_grad():
        for param_name, param in sae.named_parameters():
            dim = _feature_dim(param_name, param, d_sae)
            if dim is None:
                continue
            fill = _NEVER_FIRES if param.ndim == 1 and param_name.split(".")[-1].startswith("b_") else 0.0
            param.index_fill_(dim, index.to(param.device), fill)
    dropped = sorted(set(features) | set(sae.cfg.metadata.get("dropped_features") or []))
    sae.cfg.metadata["dropped_features"] = dropped
    import logging

    logging.getLogger(__name__).warning(
        "%s: feature(s) %s have NaN or inf weights and are left out (they never fire and steer nothing).",
        where,
        _shown(features),
    )
    return features


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
        NonFiniteSAEError: If weights of the SAE are NaN or inf (:func:`check_sae_finite`).
    """
    check_sae_finite(sae)  # every explainer, miner and scorer checks the SAE here
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


class UnreachableHookError(SAEModelMismatchError):
    """An SAE hook after the vision layer the language model reads: steering there changes nothing
    the model says (LLaVA reads its penultimate layer). Reading there (mining, Top-k) is fine."""


def check_sae_steers(sae: SAE, model: Any, method: str = "steering") -> str:
    """Check that an SAE fits ``model`` (:func:`check_sae_fits`) and that its hook reaches the
    language model, so that adding a direction there can change the answer.

    Args:
        sae: A ``sae_lens.SAE`` with ``cfg.metadata.hook_name``.
        model: A HookedVLM (a bare HookedViT has no language model and passes).
        method: What is refused, for the message (``"steering"``, ``"the hybrid"``, ...).

    Returns:
        The SAE's hook as a HookedViT hook name.

    Raises:
        UnreachableHookError: If the hook is after the layer the language model reads; the message
            names that layer.
        SAEModelMismatchError: As :func:`check_sae_fits`.
    """
    resolved = check_sae_fits(sae, model)
    reaches = getattr(model, "reaches_language_model", None)
    if reaches is not None and not reaches(resolved):
        layer = model.feature_layer
        raise UnreachableHookError(
            f"The SAE reads {resolved}, after the vision layer the language model of "
            f"{model.vision.cfg.model_name!r} reads (blocks.{layer}.hook_resid_post): {method} there changes "
            f"nothing the model says. Use an SAE at layer {layer} or before for steering and the hybrid; "
            "mining and Top-k read any layer."
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
