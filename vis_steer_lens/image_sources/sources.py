"""Random-access image collections that can be described, fingerprinted and reopened: a folder,
a ``datasets`` dataset, an in-memory list."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vis_steer_lens.image_sources.decoding import (
    IMAGE_DECODE_ERRORS,
    ImageSourceError,
    UnreadableImageError,
    load_image,
    to_rgb,
)

logger = logging.getLogger(__name__)

#: Unreadable images of one run logged by name; later ones are only counted.
SKIPS_LOGGED = 10
#: Image files a folder source lists.
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}
#: Entries named in a folder's ``describe()`` (all of them are in ``FolderImages.not_listed``).
_DESCRIBED_NOT_LISTED = 20


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


def read_batch(
    source: ImageSource, indices: range, skipped: list[dict[str, Any]]
) -> tuple[list[int], list[Any]]:
    """The readable images among ``indices``: their ids and items (PIL images decoded and made RGB
    now, one at a time). Each unreadable one is appended to ``skipped`` as ``{"index", "name", "reason"}``
    and logged, the first :data:`SKIPS_LOGGED` of a run by name (mining and caching both read this way)."""
    ids: list[int] = []
    items: list[Any] = []
    for index in indices:
        try:
            item = source[index]
            if isinstance(item, Image.Image):
                item = to_rgb(item)
        except UnreadableImageError as err:
            reason = err.reason
        except IMAGE_DECODE_ERRORS as err:
            reason = f"it cannot be decoded ({type(err).__name__}: {err})"
        else:
            ids.append(index)
            items.append(item)
            continue
        skipped.append({"index": index, "name": source.image_name(index), "reason": reason})
        if len(skipped) <= SKIPS_LOGGED:
            logger.warning("Skipping unreadable image %s: %s", skipped[-1]["name"], reason)
            if len(skipped) == SKIPS_LOGGED:
                logger.warning("Further unreadable images are counted, not logged (meta['skipped_images']).")
    return ids, items
