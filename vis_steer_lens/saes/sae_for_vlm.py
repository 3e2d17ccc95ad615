"""Convert SAEs trained with ExplainableML/sae-for-vlm (Pach et al., "Sparse Autoencoders Learn
Monosemantic Features in Vision-Language Models", 2025) into SAELens ``JumpReLUSAE`` objects.

That code trains SAEs on CLIP ViT-L/14-336 (the tower of LLaVA-1.5) at the output of a block
(its ``post_mlp_residual`` attachment point, layer 22 in its scripts: LLaVA's feature layer) with
its copy of the ``dictionary_learning`` package, and saves each checkpoint as one torch state dict
(``trainer_0/checkpoints/ae_<step>.pt``) beside ``trainer_0/config.json``. Two dictionary classes
write it:

* ``MatroyshkaBatchTopKSAE``: ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_in]``,
  ``b_dec [d_in]``, ``k``, ``threshold``, ``group_sizes``;
* ``BatchTopKSAE``: ``encoder.weight [d_sae, d_in]``, ``encoder.bias``, ``decoder.weight
  [d_in, d_sae]``, ``b_dec``, ``k``, ``threshold``.

Both encode at inference (``use_threshold=True``, what its steering uses) as
``f = relu(pre) * (relu(pre) > threshold)`` with ``pre = (x - b_dec) @ W_enc + b_enc``, and decode
``f @ W_dec + b_dec`` (the Matryoshka groups cut nothing once every group is active, as loaded).
SAELens' ``JumpReLUSAE`` computes ``relu(pre) * (pre > threshold)`` with ``x - b_dec`` in; with
every feature's threshold set to the one learned (0 where it is unset, -1: then both are a plain
ReLU) the two are the same function. The training config leaves ``layer`` and ``lm_name`` empty, so
the hook and the model are given here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

from vis_steer_lens.saes.metadata import set_vision_metadata, vision_sae_metadata

#: sae-for-vlm's attachment points that are a HookedViT activation.
ATTACHMENT_POINTS = {"post_mlp_residual": "hook_resid_post"}

#: The model its released scripts train on and steer: CLIP ViT-L/14-336 inside LLaVA-1.5-7B.
DEFAULT_MODEL = "llava-hf/llava-1.5-7b-hf"


class SAEForVLMFormatError(ValueError):
    """A checkpoint that is not an sae-for-vlm SAE (missing or misshapen weights)."""


def _weights(state: dict[str, torch.Tensor], path: Path) -> tuple[torch.Tensor, ...]:
    """``(W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_in], b_dec)`` from either dictionary class."""
    if {"W_enc", "b_enc", "W_dec", "b_dec"} <= set(state):
        weights = state["W_enc"], state["b_enc"], state["W_dec"], state["b_dec"]
    elif {"encoder.weight", "encoder.bias", "decoder.weight", "b_dec"} <= set(state):
        weights = state["encoder.weight"].T, state["encoder.bias"], state["decoder.weight"].T, state["b_dec"]
    else:
        raise SAEForVLMFormatError(
            f"{str(path)!r} is not an sae-for-vlm SAE: expected W_enc, b_enc, W_dec, b_dec (Matryoshka) or "
            f"encoder.weight, encoder.bias, decoder.weight, b_dec (BatchTopK), found {sorted(state)}."
        )
    w_enc, b_enc, w_dec, b_dec = weights
    d_in, d_sae = w_enc.shape
    if b_enc.shape != (d_sae,) or w_dec.shape != (d_sae, d_in) or b_dec.shape != (d_in,):
        raise SAEForVLMFormatError(
            f"Weights of {str(path)!r} do not fit together: W_enc {tuple(w_enc.shape)}, b_enc "
            f"{tuple(b_enc.shape)}, W_dec {tuple(w_dec.shape)}, b_dec {tuple(b_dec.shape)}."
        )
    return w_enc, b_enc, w_dec, b_dec


def _training_config(path: Path) -> dict[str, Any]:
    """The ``trainer`` fields of ``config.json`` beside the checkpoint (``trainer_0/``), if any."""
    for folder in (path.parent, path.parent.parent):
        config = folder / "config.json"
        if config.is_file():
            fields = json.loads(config.read_text())
            return fields.get("trainer", fields)
    return {}


def load_sae_for_vlm(
    path: str | Path,
    *,
    layer: int = 22,
    attachment_point: str = "post_mlp_residual",
    model_name: str = DEFAULT_MODEL,
    n_layers: int | None = 24,
    family: str = "llava",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> JumpReLUSAE:
    """Load one sae-for-vlm checkpoint (``ae_<step>.pt``) as a SAELens ``JumpReLUSAE``.

    Args:
        path: The checkpoint file.
        layer: The CLIP block the SAE reads (its ``--layer``; 22 in its scripts, LLaVA-1.5's feature layer).
        attachment_point: Its ``--attachment_point``; only ``"post_mlp_residual"`` (a block's output,
            ``blocks.{layer}.hook_resid_post``) is a HookedViT activation.
        model_name: Recorded in the metadata; its family names the hook's other conventions.
        n_layers: Vision layers of the model (24 for CLIP ViT-L/14-336), to reject a layer out of range.
        family: The model family whose hook-name tables are recorded (LLaVA's CLIP by default).
        device: Where the SAE goes.
        dtype: The SAE's dtype.

    Returns:
        A ``JumpReLUSAE`` with the same activations and reconstructions, vision metadata
        (``hook_name``, the family's Hugging Face name) and the training config's ``dict_class``, ``k``
        and ``group_sizes`` where present. ``sae.save_model(folder)`` writes a folder plain
        ``sae_lens.SAE.load_from_disk`` loads.

    Raises:
        SAEForVLMFormatError: If the file is not such a checkpoint.
        ValueError: For another attachment point.
    """
    if attachment_point not in ATTACHMENT_POINTS:
        raise ValueError(
            f"sae-for-vlm attachment point {attachment_point!r} has no HookedViT activation; expected one of "
            f"{sorted(ATTACHMENT_POINTS)}."
        )
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a file that is no state dict
        raise SAEForVLMFormatError(f"Cannot read {str(path)!r} as a torch state dict: {err}") from err
    if not isinstance(state, dict):
        raise SAEForVLMFormatError(f"{str(path)!r} holds a {type(state).__name__}, not a state dict.")
    w_enc, b_enc, w_dec, b_dec = _weights(state, path)
    d_in, d_sae = w_enc.shape
    threshold = float(state["threshold"]) if "threshold" in state else -1.0
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=True))
    with torch.no_grad():
        sae.W_enc.copy_(w_enc)
        sae.b_enc.copy_(b_enc)
        sae.W_dec.copy_(w_dec)
        sae.b_dec.copy_(b_dec)
        sae.threshold.fill_(max(threshold, 0.0))
    trainer = _training_config(path)
    extra = {
        "source": "ExplainableML/sae-for-vlm",
        "dict_class": trainer.get("dict_class"),
        "k": int(state["k"]) if "k" in state else trainer.get("k"),
        "group_sizes": state["group_sizes"].tolist()
        if "group_sizes" in state
        else trainer.get("group_sizes"),
        "sae_for_vlm_threshold": threshold,
    }
    hook_name = f"blocks.{layer}.{ATTACHMENT_POINTS[attachment_point]}"
    set_vision_metadata(sae, vision_sae_metadata(hook_name, model_name, n_layers, family=family, **extra))
    return sae.to(device=device, dtype=dtype)


__all__ = ["ATTACHMENT_POINTS", "DEFAULT_MODEL", "SAEForVLMFormatError", "load_sae_for_vlm"]
