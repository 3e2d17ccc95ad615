"""Convert SAEs saved by the ``dictionary_learning`` package into SAELens ``TopKSAE`` objects.

The paper's released vision SAEs use this format. One SAE is a folder holding:

* ``ae.pt``: a torch state dict with ``encoder.weight [d_sae, d_in]``, ``encoder.bias [d_sae]``,
  ``decoder.weight [d_in, d_sae]``, ``b_dec [d_in]``, ``k`` (int tensor) and ``threshold``
  (float tensor, -1 when unused);
* ``config.json``: a ``trainer`` object with ``dict_class``, ``activation_dim``, ``dict_size``,
  ``k``, ``layer``, ``lm_name`` and ``submodule_name`` (e.g. ``enc_res_out_layer_16``).

``AutoEncoderTopK`` encodes ``f = topk(relu(encoder(x - b_dec)), k)`` and decodes
``x_hat = decoder(f) + b_dec``. SAELens' ``TopKSAE`` computes
``topk(process(x) @ W_enc + b_enc)`` followed by a ReLU on the kept values, with
``process(x) = x - b_dec`` when ``apply_b_dec_to_input`` is set, and decodes
``f @ W_dec + b_dec``. Taking the top k before or after the ReLU keeps the same positive
values (the rest are zero either way), so with ``W_enc = encoder.weight.T``,
``b_enc = encoder.bias``, ``W_dec = decoder.weight.T``, no activation normalisation and no
decoder-norm rescaling the two SAEs are the same function.

``BatchTopKSAE`` (same state dict as ``AutoEncoderTopK``) and ``MatryoshkaBatchTopKSAE`` (``W_enc
[d_in, d_sae]``, ``b_enc``, ``W_dec [d_sae, d_in]``, ``b_dec``, ``k``, ``threshold``,
``group_sizes``) pick the top ``k * batch`` activations of a whole batch while training, which makes
a token's code depend on the rest of its batch; at inference they encode with one threshold learned
during training: ``f = r * (r > threshold)`` with ``r = relu((x - b_dec) @ W_enc + b_enc)`` (all
Matryoshka groups active). That is SAELens' ``JumpReLUSAE`` (``relu(h) * (h > theta)``) with every
feature's ``theta = max(threshold, 0)``: for ``threshold >= 0``, ``r > threshold`` exactly when
``h > threshold``; an unset threshold (-1, before training set it) keeps every positive value, as
``theta = 0`` does. They load as ``JumpReLUSAE``s with identical activations.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAE, SAEMetadata
from sae_lens.util import dtype_to_str, str_to_dtype

from vis_steer_lens.saes.metadata import vision_sae_metadata

WEIGHTS_FILENAME = "ae.pt"
CONFIG_FILENAME = "config.json"

#: ``dict_class`` values this converter understands.
SUPPORTED_DICT_CLASSES: tuple[str, ...] = ("AutoEncoderTopK", "BatchTopKSAE", "MatryoshkaBatchTopKSAE")

#: Classes that encode with a learned threshold at inference (loaded as SAELens ``JumpReLUSAE``).
THRESHOLD_DICT_CLASSES: tuple[str, ...] = ("BatchTopKSAE", "MatryoshkaBatchTopKSAE")

_REQUIRED_WEIGHTS = ("encoder.weight", "encoder.bias", "decoder.weight", "b_dec")
# MatryoshkaBatchTopKSAE keeps its weights as parameters, in SAELens' layout.
_REQUIRED_MATRYOSHKA_WEIGHTS = ("W_enc", "b_enc", "W_dec", "b_dec")

# `enc_` marks the vision encoder (the language model's layers have no such prefix).
_SUBMODULE_RE = re.compile(r"^enc_(res_out|res_in|mlp_out|attn_out)_layer_(\d+)$")
_SUBMODULE_HOOKS = {
    "res_out": "hook_resid_post",
    "res_in": "hook_resid_pre",
    "mlp_out": "hook_mlp_out",
    "attn_out": "hook_attn_out",
}


class DictionaryLearningFormatError(ValueError):
    """A ``dictionary_learning`` SAE folder that cannot be converted."""


def is_dictionary_learning_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding both ``ae.pt`` and ``config.json``."""
    folder = Path(path)
    return (folder / WEIGHTS_FILENAME).is_file() and (folder / CONFIG_FILENAME).is_file()


def hook_name_from_submodule(submodule_name: str) -> str:
    """Map a ``dictionary_learning`` vision ``submodule_name`` to a HookedViT hook name.

    Args:
        submodule_name: e.g. ``"enc_res_out_layer_16"`` (vision encoder, residual stream at
            the output of layer 16). ``enc_res_in_layer_N``, ``enc_mlp_out_layer_N`` and
            ``enc_attn_out_layer_N`` are understood too.

    Returns:
        The HookedViT hook name, e.g. ``"blocks.16.hook_resid_post"``.

    Raises:
        DictionaryLearningFormatError: If the name follows none of these patterns.
    """
    match = _SUBMODULE_RE.match(submodule_name)
    if match is None:
        raise DictionaryLearningFormatError(
            f"Cannot read a vision hook point from submodule_name {submodule_name!r}. Expected "
            f"'enc_<kind>_layer_<N>' with <kind> one of {sorted(_SUBMODULE_HOOKS)}, e.g. "
            "'enc_res_out_layer_16'. Pass hook_name=... to the converter to set it explicitly."
        )
    kind, layer = match.groups()
    return f"blocks.{int(layer)}.{_SUBMODULE_HOOKS[kind]}"


def read_dictionary_learning_config(folder: str | Path) -> dict[str, Any]:
    """Read the ``trainer`` object of ``config.json`` in a ``dictionary_learning`` folder.

    Raises:
        DictionaryLearningFormatError: If the file is missing, is not JSON or has no
            ``trainer`` object.
    """
    path = Path(folder) / CONFIG_FILENAME
    if not path.is_file():
        raise DictionaryLearningFormatError(
            f"No {CONFIG_FILENAME} in {str(folder)!r}. A dictionary_learning SAE folder holds "
            f"{WEIGHTS_FILENAME} and {CONFIG_FILENAME}; point at the folder that contains both "
            "(for the paper's releases this is '<run>/trainer_0')."
        )
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DictionaryLearningFormatError(f"{str(path)!r} is not valid JSON: {error}") from error
    trainer = config.get("trainer") if isinstance(config, dict) else None
    if not isinstance(trainer, dict):
        raise DictionaryLearningFormatError(
            f"{str(path)!r} has no 'trainer' object; found top-level keys "
            f"{sorted(config) if isinstance(config, dict) else type(config).__name__}."
        )
    return trainer


def _read_state_dict(folder: Path, dict_class: str = "AutoEncoderTopK") -> dict[str, torch.Tensor]:
    path = folder / WEIGHTS_FILENAME
    if not path.is_file():
        raise DictionaryLearningFormatError(
            f"No {WEIGHTS_FILENAME} in {str(folder)!r}; a dictionary_learning SAE folder holds "
            f"{WEIGHTS_FILENAME} and {CONFIG_FILENAME}."
        )
    try:
        # weights_only: the file is a plain state dict, so never run pickled code from it.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types (pickle, zip, runtime) for a bad file
        raise DictionaryLearningFormatError(
            f"Could not read {str(path)!r} as a torch state dict ({type(error).__name__}: {error}). "
            "The file may be truncated or corrupt; download it again."
        ) from error
    if not isinstance(state, dict):
        raise DictionaryLearningFormatError(
            f"{str(path)!r} holds a {type(state).__name__}, expected a state dict (a dict of tensors)."
        )
    required = _REQUIRED_MATRYOSHKA_WEIGHTS if dict_class == "MatryoshkaBatchTopKSAE" else _REQUIRED_WEIGHTS
    missing = [key for key in required if key not in state]
    if missing:
        raise DictionaryLearningFormatError(
            f"{str(path)!r} lacks {missing}; a {dict_class} state dict has "
            f"{list(required) + ['k', 'threshold']}, found {sorted(state)}."
        )
    if dict_class == "MatryoshkaBatchTopKSAE":  # one layout for the checks and the conversion below
        state = dict(state)
        state["encoder.weight"], state["encoder.bias"] = state.pop("W_enc").T, state.pop("b_enc")
        state["decoder.weight"] = state.pop("W_dec").T
    return state


def _check_shape(name: str, tensor: torch.Tensor, expected: tuple[int, ...], folder: Path) -> None:
    if tuple(tensor.shape) != expected:
        raise DictionaryLearningFormatError(
            f"{name} in {str(folder / WEIGHTS_FILENAME)!r} has shape {tuple(tensor.shape)}, but "
            f"config.json (activation_dim, dict_size) implies {expected}. The weights and the "
            "config come from different runs; check that both files are from the same folder."
        )


def load_dictionary_learning_sae(
    folder: str | Path,
    *,
    device: str = "cpu",
    dtype: str | torch.dtype | None = None,
    hook_name: str | None = None,
    model_name: str | None = None,
    **metadata: Any,
) -> SAE:
    """Convert a ``dictionary_learning`` SAE folder into a SAELens SAE: ``AutoEncoderTopK`` into a
    ``TopKSAE``, ``BatchTopKSAE`` and ``MatryoshkaBatchTopKSAE`` into a ``JumpReLUSAE`` holding their
    inference threshold (see the module docstring).

    An ``AutoEncoderTopK`` encodes ``topk(relu((x - b_dec) @ encoder.weight.T + encoder.bias), k)``
    and decodes ``f @ decoder.weight.T + b_dec``, exactly as the original; a non-negative
    ``threshold`` in its ``ae.pt`` (used by ``dictionary_learning`` only when thresholding is asked
    for) is recorded in ``cfg.metadata.dictionary_learning_threshold`` and not applied. BatchTopK
    and Matryoshka BatchTopK SAEs apply theirs, as their ``encode`` does at inference (recorded in
    ``cfg.metadata.inference_threshold``, with ``batch_top_k`` and the Matryoshka
    ``matryoshka_group_sizes``). The decoder is kept as stored (unit-norm rows for the released SAEs).

    Args:
        folder: Folder with ``ae.pt`` and ``config.json``.
        device: Device of the returned SAE.
        dtype: dtype of the returned SAE (``"float32"`` when ``None``; the weights are converted).
        hook_name: Override the hook point read from ``submodule_name`` (any convention).
        model_name: Override the model name read from ``lm_name``.
        **metadata: Extra ``cfg.metadata`` fields (e.g. ``image_size=896``).

    Returns:
        A ``sae_lens.TopKSAE`` or ``JumpReLUSAE`` with ``d_in = activation_dim``, ``d_sae = dict_size``, and vision
        metadata (see :func:`vis_steer_lens.saes.vision_sae_metadata`).

    Raises:
        DictionaryLearningFormatError: For missing or corrupt files, an unsupported
            ``dict_class``, shapes that disagree with the config, or an unreadable
            ``submodule_name``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DictionaryLearningFormatError(f"{str(folder)!r} is not a folder.")
    trainer = read_dictionary_learning_config(folder)
    dict_class = trainer.get("dict_class")
    if dict_class not in SUPPORTED_DICT_CLASSES:
        raise DictionaryLearningFormatError(
            f"Unsupported dict_class {dict_class!r} in {str(folder / CONFIG_FILENAME)!r}; this "
            f"converter handles {list(SUPPORTED_DICT_CLASSES)}. For another format pass "
            "load_sae(..., converter=your_function)."
        )
    try:
        d_in, d_sae = int(trainer["activation_dim"]), int(trainer["dict_size"])
    except (KeyError, TypeError, ValueError) as error:
        raise DictionaryLearningFormatError(
            f"config.json in {str(folder)!r} needs integer 'activation_dim' and 'dict_size' in "
            f"'trainer'; got activation_dim={trainer.get('activation_dim')!r}, "
            f"dict_size={trainer.get('dict_size')!r}."
        ) from error

    state = _read_state_dict(folder, dict_class)
    _check_shape("encoder.weight", state["encoder.weight"], (d_sae, d_in), folder)
    _check_shape("encoder.bias", state["encoder.bias"], (d_sae,), folder)
    _check_shape("decoder.weight", state["decoder.weight"], (d_in, d_sae), folder)
    _check_shape("b_dec", state["b_dec"], (d_in,), folder)

    k = _read_k(trainer, state, folder, d_sae)
    if hook_name is None:
        submodule = trainer.get("submodule_name")
        if not isinstance(submodule, str):
            raise DictionaryLearningFormatError(
                f"config.json in {str(folder)!r} has no 'submodule_name'; pass hook_name=... explicitly."
            )
        hook_name = hook_name_from_submodule(submodule)
    threshold = state.get("threshold")
    threshold = float(threshold) if isinstance(threshold, torch.Tensor) and threshold.numel() == 1 else -1.0
    uses_threshold = dict_class in THRESHOLD_DICT_CLASSES
    extras: dict[str, Any] = {
        "source_format": "dictionary_learning",
        "dictionary_learning_dict_class": dict_class,
        "dictionary_learning_submodule_name": trainer.get("submodule_name"),
        "dictionary_learning_layer": trainer.get("layer"),
        "dictionary_learning_threshold": threshold if threshold >= 0 else None,
    }
    if uses_threshold:
        # The batch's k and the threshold that replaces it at inference (None: never set, plain ReLU).
        extras["batch_top_k"] = k
        extras["inference_threshold"] = threshold if threshold >= 0 else None
    if "group_sizes" in state:
        extras["matryoshka_group_sizes"] = [int(size) for size in state["group_sizes"].tolist()]
    extras.update(metadata)  # caller's fields win
    fields = vision_sae_metadata(hook_name, model_name or trainer.get("lm_name") or "unknown", **extras)

    torch_dtype = str_to_dtype(dtype) if isinstance(dtype, str) else (dtype or torch.float32)
    weights = {
        "W_enc": state["encoder.weight"].T,
        "b_enc": state["encoder.bias"],
        "W_dec": state["decoder.weight"].T,
        "b_dec": state["b_dec"],
    }
    if uses_threshold:
        sae: SAE = JumpReLUSAE(
            JumpReLUSAEConfig(
                d_in=d_in,
                d_sae=d_sae,
                dtype=dtype_to_str(torch_dtype),
                device=device,
                apply_b_dec_to_input=True,  # encoder(x - b_dec)
                normalize_activations="none",
                metadata=SAEMetadata(**fields),
            )
        )
        weights["threshold"] = torch.full((d_sae,), max(threshold, 0.0))
        sae.load_state_dict(
            {name: w.to(device=device, dtype=torch_dtype).contiguous() for name, w in weights.items()}
        )
        return sae
    cfg = TopKSAEConfig(
        d_in=d_in,
        d_sae=d_sae,
        k=k,
        dtype=dtype_to_str(torch_dtype),
        device=device,
        apply_b_dec_to_input=True,  # encoder(x - b_dec)
        normalize_activations="none",
        rescale_acts_by_decoder_norm=False,  # decoder norms must not reweight the top-k choice
        metadata=SAEMetadata(**fields),
    )
    sae = TopKSAE(cfg)
    sae.load_state_dict(
        {name: w.to(device=device, dtype=torch_dtype).contiguous() for name, w in weights.items()}
    )
    return sae


def _read_k(trainer: dict[str, Any], state: dict[str, torch.Tensor], folder: Path, d_sae: int) -> int:
    config_k = trainer.get("k")
    weights_k = int(state["k"]) if "k" in state else None
    if config_k is None and weights_k is None:
        raise DictionaryLearningFormatError(
            f"Neither config.json nor ae.pt in {str(folder)!r} gives k (the number of active features)."
        )
    if config_k is not None and weights_k is not None and int(config_k) != weights_k:
        raise DictionaryLearningFormatError(
            f"k disagrees in {str(folder)!r}: config.json says {config_k}, ae.pt says {weights_k}."
        )
    k = weights_k if weights_k is not None else int(config_k)
    if not 0 < k <= d_sae:
        raise DictionaryLearningFormatError(f"k={k} in {str(folder)!r} must lie in 1..dict_size ({d_sae}).")
    return k
