"""Opening images from what a user or a description names: an ``--images`` argument (a folder, a
saved dataset, a hub dataset id), a ``describe()`` dict, or any Python collection."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vis_steer_lens.image_sources.decoding import ImageSourceError
from vis_steer_lens.image_sources.sources import DatasetImages, FolderImages, ImageSource, ListImages
from vis_steer_lens.plugins import IMAGE_SOURCES, UnknownPluginItemError

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
