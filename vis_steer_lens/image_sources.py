"""Random-access image collections that can be described, fingerprinted and reopened.

Mining streams over a collection once, but Top-k explainers fetch a feature's top images again much
later (often in another process), so a collection must be addressable by index and reopenable from a
small JSON description. ``source_id`` identifies the exact collection so that a resumed run never
mixes results from two datasets.

How images are read, whatever the source:

* A file is decoded in full when it is read, so a truncated file fails then and not inside a batch.
  An image that cannot be read (missing, empty, truncated, not an image) raises
  :class:`UnreadableImageError` naming it; mining skips, counts and names such images.
* :func:`to_rgb` turns every PIL mode into 8-bit RGB. 16-bit grayscale (``I;16`` and its byte
  orders, and ``I``, read as 0..65535) is scaled to 0..255, not clipped; an image with transparency
  (``RGBA``, ``LA``, ``PA``, a palette or ``L``/``RGB`` image with a transparent colour) is
  composited on white, as a viewer shows it on a page (dropping the alpha channel would show
  whatever colour the transparent pixels happen to hold); everything else goes through PIL's
  ``convert("RGB")``. The frame read of an animated image is the first.

:func:`open_images` reads a ``--images`` argument: a folder, a dataset saved with
``datasets``' ``save_to_disk``, or a Hugging Face dataset id (see its rules).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import stat
import struct
import zlib
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vis_steer_lens.plugins import IMAGE_SOURCES, UnknownPluginItemError

logger = logging.getLogger(__name__)

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
#: What PIL (and ``datasets``' image decoding) raises for an image it cannot decode
#: (``UnidentifiedImageError`` and truncated files are ``OSError``).
IMAGE_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)
#: Entries named in a folder's ``describe()`` (all of them are in ``FolderImages.not_listed``).
_DESCRIBED_NOT_LISTED = 20


class ImageSourceError(ValueError):
    """An image collection that cannot be opened as given (a missing folder, no images, a bad
    dataset id, ``datasets`` not installed)."""


class UnreadableImageError(ImageSourceError):
    """One image of a collection cannot be read (missing, empty, truncated, not an image).

    Attributes:
        name: The image's name in its collection (a folder's relative path, ``train[12]``).
        reason: What is wrong with it.
        index: Its index in the collection, where known.
    """

    def __init__(self, name: str, reason: str, index: int | None = None) -> None:
        self.name, self.reason, self.index = name, reason, index
        super().__init__(
            f"Cannot read image {name!r}: {reason}. Expected an image file PIL can decode; replace or "
            "remove it (mining skips and counts unreadable images)."
        )

    def __reduce__(self):
        return type(self), (self.name, self.reason, self.index)


class NoReadableImageError(ImageSourceError):
    """Not one image of a collection could be read."""


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of a PIL image of any mode (the rules are in the module docstring).

    Args:
        image: The image (``I;16`` and ``I`` are read as 16-bit levels 0..65535).

    Returns:
        A new ``RGB`` image of the same size; the input is left as it is.
    """
    if image.mode in _SIXTEEN_BIT_MODES:
        levels = np.clip(np.asarray(image).astype(np.float64), 0, 65535)
        return Image.fromarray(np.rint(levels / 257.0).astype(np.uint8)).convert("RGB")
    has_alpha = "A" in image.mode or "a" in image.mode or image.info.get("transparency") is not None
    if has_alpha:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def load_image(path: str | os.PathLike, name: str | None = None, index: int | None = None) -> Image.Image:
    """Read and fully decode an image file as RGB (:func:`to_rgb`).

    Args:
        path: The file.
        name: Its name in messages (default: the path).
        index: Its index in a collection, recorded in the error.

    Raises:
        UnreadableImageError: The file is missing, empty, truncated or not an image PIL reads.
    """
    name = name if name is not None else str(path)
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except FileNotFoundError:
        reason = "the file is gone (deleted or moved after the folder was listed)"
    except Image.UnidentifiedImageError:
        empty = os.path.isfile(path) and os.path.getsize(path) == 0
        reason = "the file is empty (0 bytes)" if empty else "not an image file PIL can identify"
    except Image.DecompressionBombError as err:
        reason = f"refused as a possible decompression bomb ({err})"
    except IMAGE_DECODE_ERRORS as err:
        reason = f"it cannot be decoded ({type(err).__name__}: {err})"
    raise UnreadableImageError(name, reason, index)


class ImageSource:
    """Base class of an indexable image collection.

    Subclasses implement ``__len__``, ``__getitem__`` (a PIL image or a ``[channels, H, W]`` pixel
    tensor; :class:`UnreadableImageError` for an image that cannot be read), ``source_id`` (stable
    across processes; differs between collections) and ``describe()`` (JSON-able;
    :func:`open_image_source` reopens the collection from it where possible), and may name their
    images (``image_name``).
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

    def image_name(self, index: int) -> str:
        """A name of image ``index`` for messages (default ``#index``)."""
        return f"#{int(index)}"

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


def _scan_folder(root: Path) -> tuple[list[tuple[str, int, int]], list[dict[str, str]]]:
    """``(relative name, size, mtime_ns)`` of every image file under ``root``, and what was not listed.

    Links are followed, each folder entered once (by device and inode); the real folders are walked
    before folders reached through a link, so a folder reachable both ways is listed under its real
    name. Non-image files are ignored silently; links that are broken or lead back to a folder
    already entered, and folders that cannot be read, are returned as ``{"name", "reason"}``.
    """
    entries: list[tuple[str, int, int]] = []
    not_listed: list[dict[str, str]] = []
    root_stat = root.stat()
    entered = {(root_stat.st_dev, root_stat.st_ino)}
    real: list[tuple[Path, str]] = [(root, "")]
    linked: list[tuple[Path, str, tuple[int, int]]] = []
    while real or linked:
        if real:
            folder, prefix = real.pop()
        else:
            folder, prefix, key = linked.pop(0)
            if key in entered:
                target = os.path.realpath(folder)
                loop = (os.path.realpath(folder.parent) + os.sep).startswith(target + os.sep)
                what = (
                    "a loop (it leads back to a folder that contains it)"
                    if loop
                    else "a second way into a folder already listed"
                )
                not_listed.append(
                    {"name": prefix.rstrip("/"), "reason": f"link to {target}: {what}; not followed"}
                )
                continue
            entered.add(key)
        try:
            with os.scandir(folder) as scan:
                children = sorted(scan, key=lambda entry: entry.name)
        except OSError as err:
            not_listed.append(
                {
                    "name": prefix.rstrip("/") or ".",
                    "reason": f"folder cannot be read ({err.strerror or err})",
                }
            )
            continue
        for entry in children:
            name = prefix + entry.name
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:  # bytes that are no UTF-8: the name cannot go into JSON or a table
                shown = os.fsencode(name).decode("utf-8", "backslashreplace")
                not_listed.append({"name": shown, "reason": "its name is not UTF-8; rename it to read it"})
                continue
            try:
                info = entry.stat()  # follows links
            except OSError as err:
                if entry.is_symlink():
                    reason = "a link that loops onto itself" if err.errno == errno.ELOOP else "a broken link"
                    not_listed.append({"name": name, "reason": f"{reason} ({err.strerror or err})"})
                continue
            if stat.S_ISDIR(info.st_mode):
                key = (info.st_dev, info.st_ino)
                if entry.is_symlink():
                    linked.append((Path(entry.path), name + "/", key))
                elif key not in entered:
                    entered.add(key)
                    real.append((Path(entry.path), name + "/"))
            elif stat.S_ISREG(info.st_mode) and Path(entry.name).suffix.lower() in _IMAGE_SUFFIXES:
                entries.append((name, int(info.st_size), int(info.st_mtime_ns)))
        linked.sort(key=lambda item: item[1])
    entries.sort(key=lambda entry: entry[0])
    return entries, not_listed


class FolderImages(ImageSource):
    """Image files under a folder (recursive), in sorted relative-path order, as RGB PIL images.

    Links are followed, to files and to folders, each folder once: a link back to a folder already
    listed (a loop, or a second way in) is not followed. Such links, broken links and folders that
    cannot be read are kept in ``not_listed``, named in ``describe()`` and in a logged warning.

    ``source_id`` covers each file's relative name, size and modification time (``mtime_ns``), from
    one ``stat`` per file and no read: adding, removing, renaming, resizing or rewriting a file (any
    write updates its mtime) changes it, so a resumed run never mixes two versions of a folder. Not
    caught: other bytes put in place with the same size and mtime (``cp -p`` or ``rsync -t`` of a
    same-sized file). Touching files or copying the folder elsewhere changes the id too, though the
    images are the same. Reading an image checks its size and mtime again: a file changed since the
    listing is an :class:`UnreadableImageError`, never silently another image under the same id.

    Args:
        path: The folder.
        entries: ``(relative name, size, mtime_ns)`` per file, as in :attr:`entries` of an earlier
            listing: use these files, in this order, instead of listing the folder now (a file gone
            since then reads as unreadable). Mining uses it to resume after files were deleted.

    Raises:
        ImageSourceError: The folder does not exist, or holds no image file.
    """

    def __init__(self, path: str | os.PathLike, entries: Sequence[Sequence[Any]] | None = None) -> None:
        self.path = Path(path).expanduser().resolve()
        if not self.path.is_dir():
            raise ImageSourceError(
                f"Image folder {str(self.path)!r} does not exist or is not a folder; pass a folder of "
                f"images ({', '.join(sorted(_IMAGE_SUFFIXES))})."
            )
        self.not_listed: list[dict[str, str]] = []
        if entries is None:
            found, self.not_listed = _scan_folder(self.path)
        else:
            found = [(str(name), int(size), int(mtime)) for name, size, mtime in entries]
        self.entries: list[tuple[str, int, int]] = found
        self.files = [self.path / name for name, _, _ in found]
        if self.not_listed:
            shown = "; ".join(f"{item['name']} ({item['reason']})" for item in self.not_listed[:5])
            more = f" and {len(self.not_listed) - 5} more" if len(self.not_listed) > 5 else ""
            logger.warning("%s: %d entries not listed: %s%s", self.path, len(self.not_listed), shown, more)
        if not self.files:
            raise ImageSourceError(
                f"No image files ({', '.join(sorted(_IMAGE_SUFFIXES))}) under {str(self.path)!r}"
                + (f" ({len(self.not_listed)} entries could not be listed)" if self.not_listed else "")
                + "; pass a folder that holds images."
            )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Image.Image:
        index = self._check_index(index)
        name, size, mtime = self.entries[index]
        try:
            info = self.files[index].stat()
        except FileNotFoundError:
            raise UnreadableImageError(
                name, "the file is gone (deleted or moved after the folder was listed)", index
            ) from None
        except OSError as err:
            raise UnreadableImageError(
                name, f"the file cannot be read ({err.strerror or err})", index
            ) from None
        if (info.st_size, info.st_mtime_ns) != (size, mtime):
            raise UnreadableImageError(
                name,
                "the file changed after the folder was listed (its size or mtime differ); list the folder again",
                index,
            )
        return load_image(self.files[index], name=name, index=index)

    def image_name(self, index: int) -> str:
        return self.entries[self._check_index(index)][0]

    @cached_property
    def source_id(self) -> str:
        digest = hashlib.sha1()
        for name, size, mtime in self.entries:
            digest.update(f"{name}\t{size}\t{mtime}\n".encode())
        return f"folder:{self.path}:n={len(self)}:{digest.hexdigest()[:12]}"

    def changes_since(self, entries: Sequence[Sequence[Any]]) -> dict[str, list[str]]:
        """How this listing differs from an earlier one (``entries`` as in :attr:`entries`).

        Returns:
            ``{"removed": [...], "added": [...], "changed": [...]}`` relative names, each sorted;
            changed files differ in size or mtime.
        """
        before = {str(name): (int(size), int(mtime)) for name, size, mtime in entries}
        now = {name: (size, mtime) for name, size, mtime in self.entries}
        return {
            "removed": sorted(set(before) - set(now)),
            "added": sorted(set(now) - set(before)),
            "changed": sorted(name for name in set(before) & set(now) if before[name] != now[name]),
        }

    def describe(self) -> dict[str, Any]:
        description: dict[str, Any] = {"kind": "folder", "path": str(self.path), "n": len(self)}
        if self.not_listed:
            description["n_not_listed"] = len(self.not_listed)
            description["not_listed"] = self.not_listed[:_DESCRIBED_NOT_LISTED]
        return description


def _image_column(dataset: Any) -> str | None:
    """``img`` or the first column whose feature is a ``datasets.Image``, else ``None``."""
    columns = list(getattr(dataset, "column_names", None) or [])
    if "img" in columns:
        return "img"
    features = getattr(dataset, "features", None) or {}
    for name in columns:
        if type(features.get(name)).__name__ == "Image":
            return name
    return None


class DatasetImages(ImageSource):
    """The images of a Hugging Face ``datasets.Dataset`` (or anything indexable with rows as dicts).

    Args:
        dataset: The dataset; ``dataset[i][column]`` is an image.
        column: The image column (``"image"``; when there is none, ``"img"`` or the first column
            whose feature is a ``datasets.Image``).
        origin: How it was opened (``{"loader": "disk" | "hub", "path": ..., "split": ...}``, from
            :func:`open_images`), so that ``describe()`` reopens it; ``None`` describes it from the
            dataset's info (reopened with ``load_dataset`` where it names a dataset).

    Raises:
        ImageSourceError: The dataset has no such column.
    """

    def __init__(self, dataset: Any, column: str = "image", origin: dict[str, Any] | None = None) -> None:
        columns = getattr(dataset, "column_names", None)
        if columns is not None and column not in columns:
            found = _image_column(dataset) if column == "image" else None
            if found is None:
                raise ImageSourceError(
                    f"The dataset has no {column!r} column (columns: {columns}); name its image column "
                    "(DatasetImages(dataset, column=...))."
                )
            column = found
        self.dataset = dataset
        self.column = column
        self.origin = dict(origin) if origin is not None else None
        self._undecoded = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Image.Image | torch.Tensor:
        index = self._check_index(index)
        try:
            return self.dataset[index][self.column]
        except IMAGE_DECODE_ERRORS as err:
            raise UnreadableImageError(
                self.image_name(index), f"it cannot be decoded ({type(err).__name__}: {err})", index
            ) from err

    def image_name(self, index: int) -> str:
        index = self._check_index(index)
        split = self._info()["split"]
        name = f"{split or 'row'}[{index}]"
        path = self._row_path(index)
        return f"{name} {path}" if path else name

    def _row_path(self, index: int) -> str | None:
        """The file name an image row records, read without decoding the image (best effort)."""
        try:
            if self._undecoded is None:
                from datasets import Image as ImageFeature

                self._undecoded = self.dataset.cast_column(self.column, ImageFeature(decode=False))
            raw = self._undecoded[index][self.column]
            return raw.get("path") if isinstance(raw, dict) else None
        except Exception:  # noqa: BLE001 - only a name for a message
            return None

    def _info(self) -> dict[str, Any]:
        if self.origin is not None:
            return self.origin
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
            f"dataset:{info['path']}/{info.get('name')}:{info.get('split')}:{self.column}:n={len(self)}:"
            f"{fingerprint}"
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

    def image_name(self, index: int) -> str:
        return f"{self.name}[{self._check_index(index)}]"

    def describe(self) -> dict[str, Any]:
        return {"kind": "list", "name": self.name, "n": len(self)}


#: A Hugging Face hub dataset id: ``owner/name`` (one slash, no path-like start).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SAVED_DATASET_FILES = (("dataset_info.json", "state.json"), ("dataset_dict.json",))


def _import_datasets(what: str) -> Any:
    try:
        import datasets
    except ImportError as err:
        raise ImageSourceError(
            f"{what} needs the `datasets` package, which is not installed: pip install vis-steer-lens[hf]."
        ) from err
    return datasets


def _is_saved_dataset(folder: Path) -> bool:
    return any(all((folder / name).is_file() for name in names) for names in _SAVED_DATASET_FILES)


def _open_saved_dataset(path: str | os.PathLike, split: str | None, column: str = "image") -> DatasetImages:
    """A dataset saved with ``save_to_disk`` (a ``Dataset``, or a split of a ``DatasetDict``)."""
    folder = Path(path).expanduser().resolve()
    datasets = _import_datasets(f"Reading the saved dataset {str(folder)!r}")
    loaded = datasets.load_from_disk(str(folder))
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        if split is None:
            split = "train" if "train" in splits or len(splits) != 1 else splits[0]
        if split not in splits:
            raise ImageSourceError(
                f"The saved dataset {str(folder)!r} has no split {split!r} (splits: {splits}); pass "
                f"{str(folder)}:SPLIT."
            )
        loaded = loaded[split]
    elif split is not None and split != str(getattr(loaded, "split", None)):
        raise ImageSourceError(
            f"{str(folder)!r} is a single saved dataset (split {getattr(loaded, 'split', None)!r}), so "
            f"split {split!r} cannot be chosen; pass the folder without ':{split}'."
        )
    origin = {"loader": "disk", "path": str(folder), "split": split}
    return DatasetImages(loaded, column=column, origin=origin)


def _open_hub_dataset(
    path: str,
    split: str | None,
    name: str | None = None,
    data_dir: str | None = None,
    revision: str | None = None,
    column: str = "image",
) -> DatasetImages:
    """``datasets.load_dataset(path, name, split=split)`` (split default ``train``)."""
    datasets = _import_datasets(f"Reading the Hugging Face dataset {path!r}")
    split = split or "train"
    options = {key: value for key, value in (("data_dir", data_dir), ("revision", revision)) if value}
    unreachable = _hub_unreachable()
    try:
        if unreachable is None:
            dataset = datasets.load_dataset(path, name, split=split, **options)
        else:  # no network: the local cache only, at once, instead of a minute of retries
            with _offline(datasets):
                dataset = datasets.load_dataset(path, name, split=split, **options)
    except Exception as err:  # noqa: BLE001 - the hub's, the builder's or the network's error, re-worded
        if unreachable is not None:
            raise ImageSourceError(
                f"Could not load {path!r} (split {split!r}): the Hugging Face hub cannot be reached "
                f"({unreachable}) and the dataset is not in the local cache, nor is it a local folder. "
                "Connect to the network, or pass a local folder of images (or a dataset saved with save_to_disk)."
            ) from None
        raise ImageSourceError(
            f"Could not load {path!r} (split {split!r}) as a Hugging Face dataset, and it is not a local "
            f"folder either: {type(err).__name__}: {err}. Check the id and split (owner/name[:split] or "
            "hf://datasets/owner/name[:split]), that the hub can be reached, or pass a local folder."
        ) from err
    origin = {"loader": "hub", "path": path, "name": name, "split": split, **options}
    return DatasetImages(dataset, column=column, origin=origin)


#: Seconds to wait for the hub's host before treating the machine as offline.
HUB_PROBE_TIMEOUT = 3.0


def _hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be reached (one quick connect), or ``None`` when it can, when
    offline mode is set already, or behind a proxy (which only the HTTP client knows how to use)."""
    import socket
    from urllib.parse import urlparse

    try:
        from huggingface_hub import constants
    except ImportError:
        return None
    if constants.HF_HUB_OFFLINE or any(
        os.environ.get(v)
        for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
    ):
        return None
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT).close()
    except OSError as err:
        return f"{host}: {err.strerror or err}"
    return None


class _offline:
    """Offline mode of ``datasets`` and ``huggingface_hub`` for the duration of a ``with`` block."""

    def __init__(self, datasets: Any) -> None:
        from huggingface_hub import constants

        self.modules = [
            m for m in (constants, getattr(datasets, "config", None)) if hasattr(m, "HF_HUB_OFFLINE")
        ]

    def __enter__(self) -> None:
        self.saved = [m.HF_HUB_OFFLINE for m in self.modules]
        for module in self.modules:
            module.HF_HUB_OFFLINE = True

    def __exit__(self, *exc: Any) -> None:
        for module, value in zip(self.modules, self.saved, strict=True):
            module.HF_HUB_OFFLINE = value


def _local_path_and_split(text: str) -> tuple[Path, str | None] | None:
    """An existing local path, with a ``:split`` suffix taken off where the whole text is no path."""
    whole = Path(text).expanduser()
    if whole.exists():
        return whole, None
    for position in [i for i, char in enumerate(text) if char == ":"]:
        head = Path(text[:position]).expanduser()
        if text[:position] and head.exists():
            return head, text[position + 1 :] or None
    return None


def open_images(spec: str | os.PathLike) -> ImageSource:
    """Open an image collection named by a string (the CLI's ``--images``).

    Rules, in order:

    1. An existing local folder saved with ``datasets``' ``save_to_disk`` (it holds
       ``dataset_info.json`` and ``state.json``, or ``dataset_dict.json``): ``datasets.load_from_disk``;
       ``FOLDER:SPLIT`` picks a split of a saved ``DatasetDict`` (default ``train``, or its only split).
    2. Any other existing local folder: :class:`FolderImages`.
    3. ``hf://datasets/OWNER/NAME[@REVISION][/DATA_DIR][:SPLIT]``, or ``OWNER/NAME[:SPLIT]`` that is
       no local path: ``datasets.load_dataset(..., split=SPLIT)`` (default ``train``; slices such as
       ``train[:1000]`` work).

    Every result's ``describe()`` reopens it through :func:`open_image_source`.

    Raises:
        ImageSourceError: Nothing matches (a missing folder), the dataset cannot be loaded, or
            ``datasets`` is not installed (``pip install vis-steer-lens[hf]``).
    """
    text = os.fspath(spec)
    if text.startswith("hf://"):
        if not text.startswith("hf://datasets/"):
            raise ImageSourceError(
                f"--images {text!r}: only hf://datasets/OWNER/NAME[:SPLIT] paths are read (a dataset repo)."
            )
        location, _, split = text[len("hf://datasets/") :].partition(":")
        parts = [part for part in location.split("/") if part]
        if len(parts) < 2:
            raise ImageSourceError(f"--images {text!r}: expected hf://datasets/OWNER/NAME[:SPLIT].")
        repo_name, _, revision = parts[1].partition("@")
        return _open_hub_dataset(
            f"hf://datasets/{parts[0]}/{repo_name}",
            split or None,
            data_dir="/".join(parts[2:]) or None,
            revision=revision or None,
        )
    local = _local_path_and_split(text)
    if local is not None:
        path, split = local
        if path.is_dir() and _is_saved_dataset(path):
            return _open_saved_dataset(path, split)
        if split is not None:
            raise ImageSourceError(
                f"--images {text!r}: {str(path)!r} is not a dataset saved with save_to_disk, so "
                f"':{split}' names no split; pass the folder alone."
            )
        return FolderImages(path)
    repo, _, split = text.partition(":")
    if _HUB_ID.match(repo):
        return _open_hub_dataset(repo, split or None)
    raise ImageSourceError(
        f"--images {text!r} is no local folder and no Hugging Face dataset id; expected a folder of "
        "images, a dataset saved with save_to_disk, OWNER/NAME[:SPLIT] or hf://datasets/OWNER/NAME[:SPLIT]."
    )


def open_image_source(spec: dict[str, Any] | str | os.PathLike) -> ImageSource:
    """Reopen an image collection from its ``describe()`` output, or open one named by a string
    (:func:`open_images`).

    Raises:
        ImageSourceError: For a kind that cannot be reopened from a description (an in-memory list),
            an unknown kind, or a dataset that cannot be loaded.
    """
    if isinstance(spec, (str, os.PathLike)):
        return open_images(spec)
    kind = spec.get("kind")
    if kind == "folder":
        return FolderImages(spec["path"])
    if kind == "dataset":
        column = spec.get("column", "image")
        if spec.get("loader") == "disk":
            return _open_saved_dataset(spec["path"], spec.get("split"), column=column)
        if not spec.get("path"):
            raise ImageSourceError(
                f"The dataset description {spec} names no dataset to load; pass the images again."
            )
        return _open_hub_dataset(
            spec["path"],
            spec.get("split"),
            name=spec.get("name"),
            data_dir=spec.get("data_dir"),
            revision=spec.get("revision"),
            column=column,
        )
    if kind == "list":
        raise ImageSourceError(
            f"An in-memory image list ({spec.get('name')!r}, {spec.get('n')} images) cannot be reopened "
            "from its description; pass the images again."
        )
    try:
        opener = IMAGE_SOURCES.get(kind)
    except UnknownPluginItemError:
        raise ImageSourceError(
            f"Unknown image source kind {kind!r} in {spec}; expected folder, dataset, list or a kind a "
            f"plug-in registers ({', '.join(IMAGE_SOURCES.names()) or 'none installed'})."
        ) from None
    return opener(spec)


def as_image_source(obj: Any, name: str = "list") -> ImageSource:
    """Coerce a folder path or ``--images`` string (:func:`open_images`), a ``datasets.Dataset``, a
    description dict, a list/tensor of images or an :class:`ImageSource` into an :class:`ImageSource`.

    Args:
        obj: The images.
        name: Name of the collection when ``obj`` is a plain list.
    """
    if isinstance(obj, ImageSource):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        return open_images(obj)
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
