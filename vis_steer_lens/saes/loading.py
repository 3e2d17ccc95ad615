"""Load any SAE the library can use as a ``sae_lens.SAE``.

:func:`load_sae` accepts, detected in this order:

1. a local folder in SAELens format (``cfg.json`` + ``sae_weights.safetensors``);
2. a local folder in ``dictionary_learning`` format (``ae.pt`` + ``config.json``; AutoEncoderTopK,
   BatchTopK, Matryoshka BatchTopK), a saev ``sae.pt`` (refused with how to name its hook: the file
   does not record it), or any folder a converter added with :func:`register_converter` recognises;
3. a release of this library's vision registry (:func:`vis_steer_lens.saes.list_vision_releases`),
   downloaded from the hub and converted according to the release's format;
4. a release of SAELens' own registry (``SAE.from_pretrained``);
5. a hub repository id ``owner/name`` with ``sae_id`` naming a folder inside it, downloaded and
   then read as in 1 or 2.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import huggingface_hub
import torch
from sae_lens import SAE
from sae_lens.constants import SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME
from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
from sae_lens.util import dtype_to_str, str_to_dtype

from vis_steer_lens.atomic import damaged
from vis_steer_lens.saes.dictionary_learning import (
    is_dictionary_learning_folder,
    load_dictionary_learning_sae,
)
from vis_steer_lens.saes.registry import get_release, is_vision_release
from vis_steer_lens.saes.saev import is_saev_folder, load_saev_sae
from vis_steer_lens.saes.validation import check_sae_finite, check_sae_fits, check_sae_tower

#: A function that turns a local folder into an SAE.
ConvertFn = Callable[[Path], SAE]
#: A function that says whether a local folder is in a converter's format.
DetectFn = Callable[[Path], bool]

_HUB_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class SAESourceError(ValueError):
    """An SAE source that :func:`load_sae` cannot interpret."""


#: A function that turns a release's downloaded folder into an SAE, given the release and the SAE's
#: id (for formats whose files do not say the model or the hook).
ReleaseConvertFn = Callable[[Path, Any, str], SAE]


@dataclass(frozen=True)
class SAEConverter:
    """A named on-disk SAE format: how to recognise a folder and how to load it (and, where its files
    do not name the model or the hook, how to load a registry release's folder)."""

    name: str
    detect: DetectFn
    convert: ConvertFn
    convert_release: ReleaseConvertFn | None = None


def _is_saelens_folder(folder: Path) -> bool:
    return (folder / SAE_CFG_FILENAME).is_file() and (folder / SAE_WEIGHTS_FILENAME).is_file()


def _load_saelens_folder(folder: Path) -> SAE:
    try:
        return SAE.load_from_disk(folder)
    except (FileNotFoundError, PermissionError):
        raise
    except RuntimeError as err:
        if "size mismatch" not in str(err) and "state_dict" not in str(err):
            raise
        sizes = [line.strip() for line in str(err).splitlines() if "size mismatch" in line][:2]
        raise SAESourceError(
            f"The SAE in {str(folder)!r} does not load: its {SAE_CFG_FILENAME} and {SAE_WEIGHTS_FILENAME} "
            f"disagree ({'; '.join(sizes) or ' '.join(str(err).split())[:200]}). Restore the folder's files "
            "from one save (d_in and d_sae in the config must be the weights' shapes)."
        ) from None
    except Exception as err:  # safetensors' error for a truncated file, a damaged cfg.json, ...
        if type(err).__name__ != "SafetensorError" and not isinstance(err, (ValueError, UnicodeDecodeError)):
            raise
        raise damaged(
            folder / (SAE_WEIGHTS_FILENAME if type(err).__name__ == "SafetensorError" else SAE_CFG_FILENAME),
            err,
            "SAE weights" if type(err).__name__ == "SafetensorError" else "SAE config",
            "restore or re-download the SAE folder",
        ) from None


def _load_dictionary_learning_folder(folder: Path) -> SAE:
    return load_dictionary_learning_sae(folder)


def _load_saev_folder(folder: Path) -> SAE:
    raise SAESourceError(
        f"{str(folder / 'sae.pt')!r} is a saev checkpoint, which does not record the model or the layer it "
        "reads. Load it with vis_steer_lens.saes.load_saev_sae(path, hook_name='blocks.<layer>.hook_resid_post', "
        "model_name=...), or through a vision registry release that names them."
    )


def _load_saev_release(folder: Path, release: Any, sae_id: str) -> SAE:
    """A saev release's SAE: the hook is its id, the model and the normalisation the release's."""
    from vis_steer_lens.families import canonical_hook_name, family_of_model_name

    family = release.info.get("family") or family_of_model_name(release.model)
    hook_name = canonical_hook_name(sae_id, family=family)
    return load_saev_sae(
        folder,
        hook_name=hook_name,
        model_name=release.model,
        family=family,
        release=release.name,
        repo_id=release.repo_id,
        token_selection=release.info.get("token_selection"),
        saev_normalisation=release.info.get("normalisation"),
    )


# Built-ins first, so that detection order is SAELens, then dictionary_learning, then user formats.
_CONVERTERS: dict[str, SAEConverter] = {
    "saelens": SAEConverter("saelens", _is_saelens_folder, _load_saelens_folder),
    "dictionary_learning": SAEConverter(
        "dictionary_learning", is_dictionary_learning_folder, _load_dictionary_learning_folder
    ),
    "saev": SAEConverter("saev", is_saev_folder, _load_saev_folder, _load_saev_release),
}
_BUILTIN_CONVERTERS = frozenset(_CONVERTERS)


def register_converter(
    name: str, detect_fn: DetectFn, convert_fn: ConvertFn, *, overwrite: bool = False
) -> None:
    """Teach :func:`load_sae` a new on-disk SAE format.

    Args:
        name: Format name; usable as ``load_sae(..., converter=name)`` and as a release's
            ``format`` in the vision registry.
        detect_fn: ``(folder: Path) -> bool``, whether a local folder is in this format. Called
            on folders that are neither SAELens nor ``dictionary_learning`` folders.
        convert_fn: ``(folder: Path) -> sae_lens.SAE``.
        overwrite: Replace an existing converter of the same name (built-ins cannot be replaced).

    Raises:
        ValueError: If ``name`` is taken and ``overwrite`` is false, or names a built-in.
    """
    if name in _BUILTIN_CONVERTERS:
        raise ValueError(f"{name!r} is a built-in converter and cannot be replaced; choose another name.")
    if name in _CONVERTERS and not overwrite:
        raise ValueError(
            f"A converter named {name!r} is already registered; pass overwrite=True to replace it."
        )
    _CONVERTERS[name] = SAEConverter(name, detect_fn, convert_fn)


def unregister_converter(name: str) -> None:
    """Remove a converter added with :func:`register_converter` (no error if absent)."""
    if name in _BUILTIN_CONVERTERS:
        raise ValueError(f"{name!r} is a built-in converter and cannot be removed.")
    _CONVERTERS.pop(name, None)


def registered_converters() -> list[str]:
    """Names of all converters, in detection order."""
    return list(_CONVERTERS)


def _resolve_converter(converter: str | ConvertFn) -> ConvertFn:
    if callable(converter):
        return converter
    if converter not in _CONVERTERS:
        raise SAESourceError(
            f"Unknown converter {converter!r}; registered converters: {registered_converters()}."
        )
    return _CONVERTERS[converter].convert


def _convert_folder(folder: Path, converter: str | ConvertFn | None) -> SAE:
    if converter is not None:
        return _resolve_converter(converter)(folder)
    for entry in _CONVERTERS.values():
        if entry.detect(folder):
            return entry.convert(folder)
    present = sorted(p.name for p in folder.iterdir())[:20]
    raise SAESourceError(
        f"Folder {str(folder)!r} is in no known SAE format. Expected {SAE_CFG_FILENAME} + "
        f"{SAE_WEIGHTS_FILENAME} (SAELens) or ae.pt + config.json (dictionary_learning); found "
        f"{present}. For another format pass converter=... or call register_converter()."
    )


def _download_folder(repo_id: str, folder: str) -> Path:
    """Download one folder of a hub repository; returns its local path."""
    folder = folder.strip("/").removeprefix(".").strip("/")
    # "" or ".": the SAE's files sit at the repository's root (saev's single-SAE repositories).
    root = huggingface_hub.snapshot_download(repo_id, allow_patterns=[f"{folder}/*" if folder else "*"])
    local = Path(root) / folder
    if not local.is_dir():
        raise SAESourceError(
            f"Hub repository {repo_id!r} has no folder {folder!r} (nothing was downloaded there). "
            "Check sae_id against the repository's file list."
        )
    return local


def _finish(sae: SAE, device: str, dtype: str | torch.dtype | None) -> SAE:
    torch_dtype = str_to_dtype(dtype) if isinstance(dtype, str) else dtype
    return sae.to(device=device, dtype=torch_dtype) if torch_dtype is not None else sae.to(device=device)


def load_sae(
    source: str | Path,
    sae_id: str | None = None,
    *,
    model: Any = None,
    device: str = "cpu",
    dtype: str | torch.dtype | None = None,
    converter: str | ConvertFn | None = None,
    nonfinite: str = "error",
) -> SAE:
    """Load an SAE and, if a model is given, check that it fits the model.

    Args:
        source: See :func:`load_sae_unchecked`.
        sae_id: See :func:`load_sae_unchecked`.
        model: A HookedViT or HookedVLM. When given, the SAE's hook must exist in it (any naming
            convention) and be ``d_in`` wide, and where the SAE records the fingerprint of the tower
            it was trained on, the model's tower must be that one (another model with the same
            tower, such as a larger Gemma 3, is fine).
        device: Device of the returned SAE.
        dtype: dtype of the returned SAE.
        converter: See :func:`load_sae_unchecked`.
        nonfinite: What to do with features whose weights are NaN or inf: ``"error"`` (refuse the
            SAE, naming them) or ``"drop"`` (leave them out, said in a warning and in
            ``cfg.metadata.dropped_features``; see :func:`~vis_steer_lens.saes.check_sae_finite`).

    Raises:
        SAESourceError: If the source cannot be interpreted.
        vis_steer_lens.saes.NonFiniteSAEError: If weights are NaN or inf (and ``nonfinite="error"``).
        vis_steer_lens.saes.SAEModelMismatchError: If the SAE does not fit ``model``.
    """
    sae = load_sae_unchecked(source, sae_id, device=device, dtype=dtype, converter=converter)
    check_sae_finite(sae, nonfinite, source=source)
    if model is not None:
        check_sae_fits(sae, model)
        check_sae_tower(sae, model)
    return sae


def load_sae_unchecked(
    source: str | Path,
    sae_id: str | None = None,
    *,
    device: str = "cpu",
    dtype: str | torch.dtype | None = None,
    converter: str | ConvertFn | None = None,
) -> SAE:
    """Load an SAE from a local folder, a vision release, a SAELens release or a hub repository.

    Args:
        source: A local folder, a release name (vision registry or SAELens registry) or a hub
            repository id ``"owner/name"``. See the module docstring for the detection order.
        sae_id: For a release, the SAE's id (for vision releases a hook name in any convention);
            for a hub repository, the folder inside it; for a local folder, a folder inside it, or
            the hook of the one SAE it holds (anything else is refused).
        device: Device of the returned SAE.
        dtype: dtype of the returned SAE (``"float32"``, ``torch.bfloat16``, ...); ``None`` keeps
            the stored dtype (SAELens releases load as float32).
        converter: A callable ``(folder: Path) -> sae_lens.SAE`` or the name of a registered
            converter, used instead of format detection for the (local or downloaded) folder.
            Not used for SAELens releases, which carry their own loader.

    Returns:
        A ``sae_lens.SAE`` on ``device``.

    Raises:
        SAESourceError: If the source matches none of the accepted kinds, or a local folder is
            in no known format.
        vis_steer_lens.saes.registry.UnknownVisionReleaseError: If ``sae_id`` is not in the
            vision release.
    """
    path = Path(source)
    if path.is_dir():
        if sae_id is not None and (path / sae_id).is_dir():
            path = path / sae_id
        sae = _convert_folder(path, converter)
        if sae_id is not None and path.name != sae_id.strip("/"):
            _check_folder_holds(path, sae, sae_id)
        return _finish(sae, device, dtype)
    if path.exists():
        raise SAESourceError(f"{str(source)!r} is a file; pass the folder that contains the SAE's files.")

    name = str(source)
    if is_vision_release(name):
        release = get_release(name)
        if sae_id is None:
            raise SAESourceError(
                f"Release {name!r} holds several SAEs; pass sae_id, one of {list(release.saes)}."
            )
        folder = _download_folder(release.repo_id, release.folder(sae_id))
        entry = _CONVERTERS.get(release.format) if converter is None else None
        if entry is not None and entry.convert_release is not None:
            return _finish(entry.convert_release(folder, release, sae_id), device, dtype)
        return _finish(_convert_folder(folder, converter or release.format), device, dtype)

    saelens_releases = get_pretrained_saes_directory()
    if name in saelens_releases:
        if sae_id is None:
            valid = list(saelens_releases[name].saes_map)
            raise SAESourceError(
                f"SAELens release {name!r} needs an sae_id, e.g. one of {valid[:5]}{' ...' if len(valid) > 5 else ''}."
            )
        sae = SAE.from_pretrained(name, sae_id, device=device, dtype=_dtype_name(dtype) or "float32")
        return _finish(sae, device, dtype)

    if _HUB_REPO_RE.match(name):
        if sae_id is None:
            raise SAESourceError(
                f"{name!r} looks like a hub repository id; pass sae_id naming the SAE's folder inside it."
            )
        folder = _download_folder(name, sae_id)
        return _finish(_convert_folder(folder, converter), device, dtype)

    raise SAESourceError(
        f"Cannot load an SAE from {name!r}: it is not a local folder, not a release of the vision "
        "registry (list_vision_releases()), not a SAELens release, and not a hub repository id "
        "('owner/name' with sae_id naming a folder). Check the spelling or the path."
    )


def _check_folder_holds(folder: Path, sae: SAE, sae_id: str) -> None:
    """Refuse an ``sae_id`` that names neither a folder inside ``folder`` nor the hook of its one SAE."""
    from vis_steer_lens.families import canonical_hook_name
    from vis_steer_lens.hook_names import UnknownHookNameError

    hook = getattr(sae.cfg.metadata, "hook_name", None)
    family = getattr(sae.cfg.metadata, "model_family", None) or "gemma3"
    try:
        asked = canonical_hook_name(sae_id, family=family)
    except (UnknownHookNameError, ValueError, KeyError):
        asked = sae_id
    if hook is None or asked != hook:
        raise SAESourceError(
            f"Folder {str(folder)!r} holds one SAE, at hook {hook!r}; sae_id {sae_id!r} names neither that hook "
            "nor a folder inside it. Drop --sae-id, or pass the folder of the SAE you mean."
        )


def _dtype_name(dtype: str | torch.dtype | None) -> str | None:
    return dtype if dtype is None or isinstance(dtype, str) else dtype_to_str(dtype)
