"""Mining results on disk: the files of a mined folder, a state written atomically and read back,
and an image folder's listing as it was when mined."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors.torch import save_file

from vis_steer_lens.atomic import atomic_path, damaged, load_safetensors, safetensors_metadata
from vis_steer_lens.image_sources import FolderImages
from vis_steer_lens.store import ResumeMismatchError

FORMAT_VERSION = 1
TOP_FILE = "top.safetensors"
FEATURES_FILE = "features.parquet"
META_FILE = "mining.json"
#: A folder source's listing when mined (relative name, size, mtime_ns per file): resuming after
#: files were deleted keeps every image's id, and reopening finds the images mined.
LISTING_FILE = "image_listing.parquet"
#: What to do about a damaged mining file.
DAMAGED_FIX = "delete the folder's files (or pass another --out) and run mine again"


def atomic_write(target: Path, write: Callable[[str], Any]) -> None:
    """Call ``write(tmp_path)`` then move the file onto ``target`` (:func:`vis_steer_lens.atomic.atomic_path`)."""
    with atomic_path(target) as tmp:
        write(str(tmp))


def storable_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state's tensors as stored: ``top_maps`` as its nonzeros when that is smaller."""
    # A TopK feature's map is mostly zeros outside the patches it fires on: store the nonzeros
    # (flat index, value) when that is smaller; :meth:`load` rebuilds the dense maps exactly.
    maps = tensors["top_maps"]
    nonzero = int(torch.count_nonzero(maps))
    index_dtype = torch.int32 if maps.numel() < 2**31 else torch.int64
    if nonzero * (4 + index_dtype.itemsize) < maps.numel() * 4:
        flat = maps.view(-1)
        index = flat.nonzero().view(-1)
        del tensors["top_maps"]
        tensors["top_maps_index"] = index.to(index_dtype)
        tensors["top_maps_values"] = flat[index]
    return tensors


def write_state(
    out_dir: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any], stats: pd.DataFrame
) -> Path:
    """Write ``top.safetensors`` (the tensors, ``meta`` in its header), ``features.parquet`` (``stats``)
    and ``mining.json`` into ``out_dir``, each through a temporary name, the safetensors file first.

    Returns:
        The folder.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stored = storable_tensors(tensors)
    atomic_write(out / TOP_FILE, lambda path: save_file(stored, path, metadata={"mining": json.dumps(meta)}))
    atomic_write(out / FEATURES_FILE, lambda path: stats.to_parquet(path, index=False))
    atomic_write(out / META_FILE, lambda path: Path(path).write_text(json.dumps(meta, indent=2)))
    return out


def read_state(out_dir: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any], int]:
    """Read what :func:`write_state` wrote: ``(tensors, meta, images_processed)``, the maps dense again
    and fields of older formats filled in.

    Raises:
        FileNotFoundError: No results in the folder.
        ValueError: Not a mining result, or another format version.
    """
    path = Path(out_dir) / TOP_FILE
    if not path.is_file():
        raise FileNotFoundError(f"No mining results in {str(out_dir)!r} (expected {TOP_FILE}).")
    header = safetensors_metadata(path, "mined top images", DAMAGED_FIX)
    if "mining" not in header:
        raise ValueError(f"{path} is not a mining result (its header has no 'mining' metadata).")
    meta = json.loads(header["mining"])
    if meta.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {meta.get('version')}; this library reads {FORMAT_VERSION}."
        )
    images_processed = int(meta.pop("images_processed"))
    for derived in ("complete", "histogram", "images_mined"):
        meta.pop(derived, None)
    tensors = load_safetensors(path, "mined top images", DAMAGED_FIX)
    if "top_maps_index" in tensors:  # maps stored as their nonzeros
        k, n_patches = int(meta["k"]), int(meta["n_patches"])
        dense = torch.zeros(len(tensors["feature_ids"]) * k * n_patches)
        dense[tensors.pop("top_maps_index").long()] = tensors.pop("top_maps_values")
        tensors["top_maps"] = dense.view(-1, k, n_patches)
    n_features, k = tensors["top_scores"].shape
    if "top_grids" not in tensors:  # saved before grids were kept: every image the square grid
        tensors["top_grids"] = torch.full((n_features, k, 2), int(meta["grid_size"]), dtype=torch.int64)
    if "tokens_seen" not in tensors:
        mined_images = (
            images_processed - len(meta.get("skipped_images", [])) - (meta.get("image_range") or [0])[0]
        )
        tensors["tokens_seen"] = torch.tensor([mined_images * int(meta["n_patches"])], dtype=torch.int64)
    return tensors, meta, images_processed


def write_listing(out_dir: str | os.PathLike, source: FolderImages) -> None:
    """Keep a folder source's listing (name, size, mtime per file) beside the results."""
    frame = pd.DataFrame(source.entries, columns=["name", "size", "mtime_ns"])
    atomic_write(Path(out_dir) / LISTING_FILE, lambda path: frame.to_parquet(path, index=False))


def folder_as_mined(source: Any, out_dir: str | os.PathLike, mined_id: str) -> FolderImages | None:
    """``source`` as the folder was listed when mined (from ``LISTING_FILE`` in ``out_dir``), where
    files were only deleted since: their ids are kept and they read as unreadable.

    Returns:
        The folder as listed then, or ``None`` when ``source`` is no folder, no listing was kept, or
        the listing is of another collection.

    Raises:
        ResumeMismatchError: Files of the folder were added or changed since (naming them).
    """
    path = Path(out_dir) / LISTING_FILE
    if not isinstance(source, FolderImages) or not path.is_file():
        return None
    try:
        table = pd.read_parquet(path)
    except Exception as err:  # a truncated or overwritten parquet file: pyarrow's own error types
        raise damaged(path, err, "the image folder's listing when it was mined", DAMAGED_FIX) from err
    entries = list(zip(table["name"], table["size"], table["mtime_ns"], strict=True))
    listed = FolderImages(source.path, entries=entries)
    if listed.source_id != mined_id:
        return None
    changes = source.changes_since(entries)
    if changes["added"] or changes["changed"]:
        said = "; ".join(
            f"{len(names)} {what} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
            for what, names in (("changed", changes["changed"]), ("added", changes["added"]))
            if names
        )
        raise ResumeMismatchError(
            f"The image folder {str(source.path)!r} changed since it was mined in {str(out_dir)!r}: {said}. "
            "Its images would no longer be the ones mined; restore them, use another out_dir, or "
            "resume=False to start over."
        )
    return listed
