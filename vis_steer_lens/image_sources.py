"""Random-access image collections that can be described, fingerprinted and reopened.

Mining streams over a collection once, but Top-k explainers fetch a feature's top images again much
later (often in another process), so a collection must be addressable by index and reopenable from a
small JSON description. ``source_id`` identifies the exact collection so that a resumed run never
mixes results from two datasets.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vis_steer_lens.plugins import IMAGE_SOURCES, UnknownPluginItemError

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}


class ImageSource:
    """Base class of an indexable image collection.

    Subclasses implement ``__len__``, ``__getitem__`` (a PIL image or a ``[channels, H, W]`` pixel
    tensor), ``source_id`` (stable across processes; differs between collections) and ``describe()``
    (JSON-able; :func:`open_image_source` reopens the collection from it where possible).
    """

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Image.Image | torch.Tensor:
        raise NotImplementedError

    @property
    def source_id(self) -> str:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def __iter__(self):
        for index in range(len(self)):
            yield self[index]

    def _check_index(self, index: int) -> int:
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"Image index {index} out of range for {len(self)} images ({self.source_id}).")
        return index

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source_id!r}, n={len(self)})"


class FolderImages(ImageSource):
    """Image files under a folder (recursive), in sorted relative-path order, as RGB PIL images.

    Args:
        path: The folder.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser().resolve()
        if not self.path.is_dir():
            raise ValueError(f"Image folder {str(self.path)!r} does not exist or is not a folder.")
        self.files = sorted(
            (p for p in self.path.rglob("*") if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES),
            key=lambda p: p.relative_to(self.path).as_posix(),
        )
        if not self.files:
            raise ValueError(
                f"No image files ({', '.join(sorted(_IMAGE_SUFFIXES))}) under {str(self.path)!r}."
            )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Image.Image:
        with Image.open(self.files[self._check_index(index)]) as image:
            return image.convert("RGB")

    @cached_property
    def source_id(self) -> str:
        # The list of relative names identifies the collection; hashing file contents would mean
        # reading the whole dataset just to build an id.
        names = "\n".join(p.relative_to(self.path).as_posix() for p in self.files)
        digest = hashlib.sha1(names.encode()).hexdigest()[:12]
        return f"folder:{self.path}:n={len(self)}:{digest}"

    def describe(self) -> dict[str, Any]:
        return {"kind": "folder", "path": str(self.path), "n": len(self)}


class DatasetImages(ImageSource):
    """The images of a Hugging Face ``datasets.Dataset`` (or anything indexable with rows as dicts).

    Args:
        dataset: The dataset; ``dataset[i][column]`` is an image.
        column: The image column (``"image"``; ``"img"`` is tried when ``"image"`` is absent).
    """

    def __init__(self, dataset: Any, column: str = "image") -> None:
        columns = getattr(dataset, "column_names", None)
        if columns is not None and column not in columns:
            if column == "image" and "img" in columns:
                column = "img"
            else:
                raise ValueError(f"The dataset has no {column!r} column (columns: {columns}).")
        self.dataset = dataset
        self.column = column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Image.Image | torch.Tensor:
        return self.dataset[self._check_index(index)][self.column]

    def _info(self) -> dict[str, Any]:
        info = getattr(self.dataset, "info", None)
        split = getattr(self.dataset, "split", None)
        return {
            "path": getattr(info, "dataset_name", None) or getattr(info, "builder_name", None),
            "name": getattr(info, "config_name", None),
            "split": str(split) if split is not None else None,
        }

    @property
    def source_id(self) -> str:
        info = self._info()
        fingerprint = getattr(self.dataset, "_fingerprint", None)
        return (
            f"dataset:{info['path']}/{info['name']}:{info['split']}:{self.column}:n={len(self)}:{fingerprint}"
        )

    def describe(self) -> dict[str, Any]:
        return {"kind": "dataset", **self._info(), "column": self.column, "n": len(self)}


class ListImages(ImageSource):
    """An in-memory list of PIL images or pixel tensors.

    Its ``source_id`` includes a fingerprint of the contents, so resuming against a different list
    with the same name is refused. It cannot be reopened from ``describe()`` alone: pass the list
    again (e.g. ``MinedActivations.load(dir, images=...)``).

    Args:
        items: The images.
        name: A name recorded in results.
    """

    def __init__(self, items: Sequence[Image.Image | torch.Tensor], name: str = "list") -> None:
        self.items = list(items)
        self.name = name

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Image.Image | torch.Tensor:
        return self.items[self._check_index(index)]

    @cached_property
    def source_id(self) -> str:
        digest = hashlib.sha1()
        for item in self.items:
            if isinstance(item, torch.Tensor):
                # The raw bytes, for any dtype (numpy has no bfloat16): a dtype's bytes are its values.
                digest.update(str(item.dtype).encode())
                flat = item.detach().cpu().contiguous().reshape(-1)
                digest.update(flat.view(torch.uint8).numpy().tobytes())
            elif isinstance(item, Image.Image):
                digest.update(item.tobytes())
            else:
                digest.update(repr(item).encode())
        return f"list:{self.name}:n={len(self)}:{digest.hexdigest()[:12]}"

    def describe(self) -> dict[str, Any]:
        return {"kind": "list", "name": self.name, "n": len(self)}


def open_image_source(spec: dict[str, Any] | str | os.PathLike) -> ImageSource:
    """Reopen an image collection from its ``describe()`` output (or a folder path).

    Raises:
        ValueError: For a kind that cannot be reopened from a description (an in-memory list),
            or an unknown kind.
    """
    if isinstance(spec, (str, os.PathLike)):
        return FolderImages(spec)
    kind = spec.get("kind")
    if kind == "folder":
        return FolderImages(spec["path"])
    if kind == "dataset":
        if not spec.get("path"):
            raise ValueError(
                f"The dataset description {spec} names no dataset to load; pass the images again."
            )
        try:
            import datasets
        except ImportError as err:
            raise ValueError("Reopening a Hugging Face dataset needs `pip install datasets`.") from err
        dataset = datasets.load_dataset(spec["path"], spec.get("name"), split=spec.get("split"))
        return DatasetImages(dataset, column=spec.get("column", "image"))
    if kind == "list":
        raise ValueError(
            f"An in-memory image list ({spec.get('name')!r}, {spec.get('n')} images) cannot be reopened "
            "from its description; pass the images again."
        )
    try:
        opener = IMAGE_SOURCES.get(kind)
    except UnknownPluginItemError:
        raise ValueError(
            f"Unknown image source kind {kind!r} in {spec}; expected folder, dataset, list or a kind a "
            f"plug-in registers ({', '.join(IMAGE_SOURCES.names()) or 'none installed'})."
        ) from None
    return opener(spec)


def as_image_source(obj: Any, name: str = "list") -> ImageSource:
    """Coerce a folder path, a ``datasets.Dataset``, a description dict, a list/tensor of images or an
    :class:`ImageSource` into an :class:`ImageSource`.

    Args:
        obj: The images.
        name: Name of the collection when ``obj`` is a plain list.
    """
    if isinstance(obj, ImageSource):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        return FolderImages(obj)
    if isinstance(obj, dict):
        return open_image_source(obj)
    if getattr(obj, "column_names", None) is not None:
        return DatasetImages(obj)
    if isinstance(obj, torch.Tensor):
        if obj.ndim != 4:
            raise ValueError(f"A pixel tensor of images must be [n, channels, H, W], got {tuple(obj.shape)}.")
        return ListImages(list(obj), name=name)
    if isinstance(obj, Sequence):
        return ListImages(obj, name=name)
    raise TypeError(
        f"Cannot use a {type(obj).__name__} as an image source: pass a folder path, a datasets.Dataset, "
        "a list of images or pixel tensors, or an ImageSource (generators are not random-access)."
    )
