"""Convert SAEs saved by OSU-NLP-Group's ``saev`` (Stevens et al., "Sparse Autoencoders for
Scientifically Rigorous Interpretation of Vision Models", 2025) into SAELens SAEs.

One SAE is one file, ``sae.pt``: a line of JSON (the header), then a ``torch.save``'d state dict
``W_enc [d_model, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_model]``, ``b_dec [d_model]`` (and,
for BatchTopK, ``activation.threshold``). Two generations of the format exist:

* **Without a schema** (saev 0.1.0, the released CLIP ViT-B/16 and DINOv2 ViT-B/14 SAEs): the header
  is the config itself (``d_vit``, ``exp_factor``, ...; ``d_sae = d_vit * exp_factor``). The SAE
  encodes ``relu((x - b_dec) @ W_enc + b_enc)``: a SAELens ``StandardSAE`` with
  ``apply_b_dec_to_input``.
* **With a schema** (``{"schema": N, "cfg": {...}}``, later saev): ``cfg`` holds ``d_model``,
  ``d_sae`` and the activation (``{"cls": "Relu" | "TopK" | "BatchTopK", "params": {...}}``; schema 1
  may name it in a top-level ``cls``). The SAE encodes ``act(x @ W_enc + b_enc)`` (no ``b_dec`` in):
  ``Relu`` is a ``StandardSAE``; ``BatchTopK`` at inference keeps what exceeds its learned
  ``threshold`` (all positive values when it is not positive), a ``JumpReLUSAE`` with every
  feature's threshold ``max(threshold, 0)``; ``TopK`` keeps the k largest pre-activations, a
  ``TopKSAE`` (SAELens clips a kept value below zero to zero, saev keeps it: the two agree wherever a
  token's k-th largest pre-activation is not negative).

Both decode ``f @ W_dec + b_dec``. saev trains on normalised activations when asked
(``scale_mean``: minus the dataset mean; ``scale_norm``: divided by a scalar so the mean norm is
``sqrt(d_model)``), and the file does not hold those statistics. Given as ``activation_mean`` and
``activation_scale`` they are folded into the weights, so the SAE reads the tower's raw activations
(and reconstructs them) as saev does with normalisation, up to float rounding.

The file records neither the model nor the layer, so the hook and the model are given here (the
vision registry gives them for its releases).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAE, SAEMetadata

from vis_steer_lens.saes.metadata import vision_sae_metadata

WEIGHTS_FILENAME = "sae.pt"

#: saev activations this converter understands.
SAEV_ACTIVATIONS = ("Relu", "TopK", "BatchTopK")


class SaevFormatError(ValueError):
    """A file that is not a saev ``sae.pt`` checkpoint, or one this converter cannot read."""


def is_saev_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a ``sae.pt`` whose first line is a JSON object."""
    file = Path(path) / WEIGHTS_FILENAME
    if not file.is_file():
        return False
    try:
        with open(file, "rb") as handle:
            return isinstance(json.loads(handle.readline()), dict)
    except (OSError, ValueError):
        return False


def read_saev_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(header, state dict)`` of a saev ``sae.pt`` (the file, or the folder holding it).

    Raises:
        SaevFormatError: If the file is missing, its first line is no JSON object, or the rest is no
            state dict.
    """
    file = Path(path)
    file = file / WEIGHTS_FILENAME if file.is_dir() else file
    if not file.is_file():
        raise SaevFormatError(
            f"No saev checkpoint at {str(file)!r}; saev writes one file, {WEIGHTS_FILENAME}."
        )
    with open(file, "rb") as handle:
        first_line = handle.readline()
        rest = handle.read()
    try:
        header = json.loads(first_line)
    except ValueError as error:
        raise SaevFormatError(
            f"{str(file)!r} does not start with a JSON header line, as saev's checkpoints do ({error})."
        ) from None
    if not isinstance(header, dict):
        raise SaevFormatError(
            f"The header of {str(file)!r} is a {type(header).__name__}, expected an object."
        )
    try:
        # weights_only: never run pickled code from a downloaded file.
        state = torch.load(io.BytesIO(rest), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types (pickle, zip, runtime) for a bad file
        raise SaevFormatError(
            f"The weights after the header of {str(file)!r} do not load as a torch state dict "
            f"({type(error).__name__}: {error}); the file may be truncated."
        ) from None
    missing = [key for key in ("W_enc", "b_enc", "W_dec", "b_dec") if key not in state]
    if missing:
        raise SaevFormatError(f"{str(file)!r} lacks {missing}; found {sorted(state)}.")
    return header, state


def _activation(header: dict[str, Any]) -> tuple[str, dict[str, Any], bool]:
    """``(activation class, its params, b_dec subtracted before encoding)`` from a header."""
    if "schema" not in header:
        return "Relu", {}, True  # saev 0.1.0: relu((x - b_dec) @ W_enc + b_enc)
    cfg = header.get("cfg") or {}
    if header.get("cls") in SAEV_ACTIVATIONS:  # schema 1, its first form: the class at the top
        name = header["cls"]
        return name, {"top_k": cfg.get("top_k", 32)} if name != "Relu" else {}, False
    activation = cfg.get("activation") or {}
    name = activation.get("cls")
    if name not in SAEV_ACTIVATIONS:
        raise SaevFormatError(
            f"Unknown saev activation {name!r} (schema {header.get('schema')}); this converter reads "
            f"{list(SAEV_ACTIVATIONS)}."
        )
    return name, dict(activation.get("params") or {}), False


def load_saev_sae(
    path: str | Path,
    *,
    hook_name: str,
    model_name: str,
    family: str | None = None,
    n_layers: int | None = None,
    activation_mean: torch.Tensor | None = None,
    activation_scale: float | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    **metadata: Any,
) -> SAE:
    """Load a saev ``sae.pt`` as a SAELens SAE with the same activations (see the module docstring).

    Args:
        path: The ``sae.pt`` file or its folder.
        hook_name: The hook the SAE reads (any convention), e.g. ``"blocks.10.hook_resid_post"`` for
            saev's ``layer=10``; the file does not record it.
        model_name: The model it was trained on (``"facebook/dinov2-with-registers-base"``).
        family: The family whose hook-name tables are recorded (default: the one ``model_name``
            belongs to).
        n_layers: Layers of the tower, to reject a hook out of range.
        activation_mean: ``[d_model]``: the mean saev subtracted from the activations (``scale_mean``).
        activation_scale: The scalar saev divided them by (``scale_norm``).
        device: Where the SAE goes.
        dtype: Its dtype (the conversion runs in float64 first, so folding loses nothing to it).
        **metadata: Further ``cfg.metadata`` fields.

    Returns:
        A ``StandardSAE``, ``TopKSAE`` or ``JumpReLUSAE`` with vision metadata (``source_format="saev"``,
        the saev activation, its ``top_k`` and threshold, the header's ``schema`` and ``lib``).
        ``sae.save_model(folder)`` writes a folder plain ``sae_lens.SAE.load_from_disk`` loads.

    Raises:
        SaevFormatError: For a file that is no saev checkpoint, or weights whose shapes disagree.
    """
    header, state = read_saev_checkpoint(path)
    name, params, subtract_b_dec = _activation(header)
    w_enc, b_enc, w_dec, b_dec = (state[key].double() for key in ("W_enc", "b_enc", "W_dec", "b_dec"))
    d_in, d_sae = w_enc.shape
    if b_enc.shape != (d_sae,) or w_dec.shape != (d_sae, d_in) or b_dec.shape != (d_in,):
        raise SaevFormatError(
            f"The weights of {str(path)!r} do not fit together: W_enc {tuple(w_enc.shape)}, b_enc "
            f"{tuple(b_enc.shape)}, W_dec {tuple(w_dec.shape)}, b_dec {tuple(b_dec.shape)}."
        )
    # Fold saev's normalisation x_n = (x - mean) / scale into the weights, so the SAE reads raw x:
    # encoding (x_n - b_dec) @ W_enc = (x - (mean + scale b_dec)) @ (W_enc / scale), or without b_dec
    # in, x_n @ W_enc = x @ (W_enc / scale) - (mean / scale) @ W_enc; decoding scale (f @ W_dec + b_dec)
    # + mean = f @ (scale W_dec) + (scale b_dec + mean).
    mean = torch.zeros(d_in, dtype=torch.float64) if activation_mean is None else activation_mean.double()
    scale = 1.0 if activation_scale is None else float(activation_scale)
    if mean.shape != (d_in,) or not scale > 0:
        raise ValueError(
            f"activation_mean must be [{d_in}] and activation_scale positive; got {tuple(mean.shape)} and {scale}."
        )
    if not subtract_b_dec:
        b_enc = b_enc - (mean / scale) @ w_enc
    weights = {"W_enc": w_enc / scale, "b_enc": b_enc, "W_dec": w_dec * scale, "b_dec": b_dec * scale + mean}

    threshold = None
    if name == "BatchTopK":
        stored = state.get("activation.threshold")
        threshold = float(stored) if stored is not None else 0.0
    extras: dict[str, Any] = {
        "source_format": "saev",
        "saev_activation": name,
        "saev_schema": header.get("schema"),
        "saev_lib": header.get("lib"),
        "saev_top_k": params.get("top_k"),
        "inference_threshold": threshold,
        "activation_normalisation_folded": activation_mean is not None or activation_scale is not None,
    }
    extras.update(metadata)
    fields = SAEMetadata(**vision_sae_metadata(hook_name, model_name, n_layers, family=family, **extras))
    common = dict(d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=subtract_b_dec, metadata=fields)
    if name == "Relu":
        sae: SAE = StandardSAE(StandardSAEConfig(**common))
    elif name == "TopK":
        sae = TopKSAE(
            TopKSAEConfig(k=int(params.get("top_k", 32)), rescale_acts_by_decoder_norm=False, **common)
        )
    else:
        sae = JumpReLUSAE(JumpReLUSAEConfig(**common))
        weights["threshold"] = torch.full((d_sae,), max(threshold, 0.0), dtype=torch.float64)
    sae.load_state_dict({key: value.to(torch.float32).contiguous() for key, value in weights.items()})
    return sae.to(device=device, dtype=dtype)


__all__ = [
    "SAEV_ACTIVATIONS",
    "WEIGHTS_FILENAME",
    "SaevFormatError",
    "is_saev_folder",
    "load_saev_sae",
    "read_saev_checkpoint",
]
