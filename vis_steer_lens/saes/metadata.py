"""Metadata that every vision SAE carries in ``sae.cfg.metadata``.

SAELens keeps free-form metadata on each SAE config (:class:`sae_lens.saes.sae.SAEMetadata`)
and writes it to ``cfg.json`` on :meth:`sae_lens.SAE.save_model`. A vision SAE of this library
records which model and which activation it reads, named in the three hook conventions of
:mod:`vis_steer_lens.hook_names`, so that any tool (ours, SAELens, TransformerLens'
``TransformerBridge``) can find the hook point again.
"""

from __future__ import annotations

from typing import Any

from sae_lens import SAE
from sae_lens.saes.sae import SAEMetadata

from vis_steer_lens.families import DEFAULT_FAMILY, equivalent_names, family_of_model_name

#: ``model_class_name`` of every vision SAE: the hooks live on a HookedViT.
VISION_MODEL_CLASS_NAME = "HookedViT"


def vision_sae_metadata(
    hook_name: str,
    model_name: str,
    n_layers: int | None = None,
    *,
    family: str | None = None,
    prepend_bos: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """Build the ``cfg.metadata`` fields of a vision SAE.

    Args:
        hook_name: The activation the SAE reads, in any hook convention (HookedViT,
            TransformerBridge or Hugging Face module path); it is stored as its HookedViT name.
        model_name: The model the SAE was trained on, e.g. ``"google/gemma-3-4b-it"``.
        n_layers: Number of layers of the vision tower; when given, a hook on a layer that
            does not exist is rejected.
        family: The model family whose Hugging Face and TransformerBridge names are recorded
            (``"gemma3"``, ``"internvl3"``); by default the family ``model_name`` belongs to.
        prepend_bos: Kept for SAELens tools that read it; vision inputs have no BOS token.
        **extra: Further JSON-serialisable fields, e.g. ``image_size=896``,
            ``dataset_path="imagenet-1k"``, ``context_size=4096`` (patches per image).

    Returns:
        A plain dict with ``model_name``, ``model_family``, ``model_class_name="HookedViT"``, ``hook_name``,
        ``hook_name_transformer_bridge``, ``hook_name_hf``, ``prepend_bos`` and the extras.
        Pass it as ``SAEMetadata(**result)`` or to :func:`set_vision_metadata`.

    Raises:
        vis_steer_lens.hook_names.UnknownHookNameError: If ``hook_name`` is not a vision hook.
    """
    # Names no family claims ("toy", a local run's name) get the default family's naming tables,
    # stated here rather than guessed inside the registry.
    family = family or family_of_model_name(model_name, default=DEFAULT_FAMILY)
    names = equivalent_names(hook_name, n_layers=n_layers, family=family)
    metadata: dict[str, Any] = {
        "model_name": model_name,
        "model_family": family,
        "model_class_name": VISION_MODEL_CLASS_NAME,
        "hook_name": names.hooked_vit,
        "hook_name_transformer_bridge": names.transformer_bridge,
        "hook_name_hf": names.hf_module,
        "prepend_bos": prepend_bos,
    }
    # `None` extras carry no information and would only shadow SAEMetadata's own default.
    metadata.update({key: value for key, value in extra.items() if value is not None})
    return metadata


def tower_sae_metadata(
    vit: Any, hook_name: str, *, dataset_path: Any, token_selection: str
) -> dict[str, Any]:
    """:func:`vision_sae_metadata` of an SAE trained on ``vit`` (a HookedViT): its model, family,
    depth, fingerprint and image geometry, with where the images came from and which tokens."""
    return vision_sae_metadata(
        hook_name,
        vit.cfg.model_name,
        n_layers=vit.cfg.n_layers,
        family=vit.cfg.family,
        tower_fingerprint=vit.tower_fingerprint(),
        image_size=vit.cfg.image_size,
        patch_size=vit.cfg.patch_size,
        context_size=vit.cfg.n_patches,
        dataset_path=dataset_path,
        token_selection=token_selection,
    )


def set_vision_metadata(sae: SAE, metadata: dict[str, Any] | SAEMetadata) -> SAE:
    """Merge metadata fields into ``sae.cfg.metadata`` in place (given fields win).

    Args:
        sae: Any SAELens SAE.
        metadata: Fields to set, e.g. the output of :func:`vision_sae_metadata`.

    Returns:
        The same SAE, for chaining.
    """
    fields = metadata.to_dict() if isinstance(metadata, SAEMetadata) else dict(metadata)
    for key, value in fields.items():
        sae.cfg.metadata[key] = value
    return sae


def sae_identity(sae: SAE) -> str:
    """A stable id for an SAE: model, hook, width and a fingerprint of every weight.

    Recorded in every result row and checked when a run resumes, so results of one SAE are
    never appended to another's. A release's ``sae_id`` is used when the metadata has one.
    """
    import hashlib

    meta = sae.cfg.metadata
    digest = hashlib.sha1()
    for name, tensor in sorted(sae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    fingerprint = digest.hexdigest()[:10]
    name = meta.get("sae_id") or f"{meta.get('model_name', 'unknown')}/{meta.get('hook_name', 'unknown')}"
    return f"{name}/d{sae.cfg.d_sae}/{fingerprint}"
