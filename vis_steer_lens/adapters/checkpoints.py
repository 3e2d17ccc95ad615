"""Reading a subset of a checkpoint's tensors, from a local folder or the hub."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import torch
from safetensors import safe_open

_INDEX = "model.safetensors.index.json"
_SINGLE = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint folder that is missing files or cannot be read."""


def _fetch(name_or_path: str, filename: str, revision: str | None) -> str | None:
    """Local path of one checkpoint file, downloading it from the hub if needed; None if absent."""
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, filename)
        return path if os.path.exists(path) else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return hf_hub_download(name_or_path, filename, revision=revision)
    except EntryNotFoundError:
        return None


def load_tensors(
    name_or_path: str, wanted: Callable[[str], bool], revision: str | None = None
) -> dict[str, torch.Tensor]:
    """Load the tensors whose key satisfies ``wanted`` from a safetensors checkpoint.

    Only the shards that hold wanted keys are read (or downloaded), so loading a vision
    tower out of a 4B-parameter VLM touches a fraction of the files.

    Args:
        name_or_path: Local folder or hub repo id.
        wanted: Predicate on tensor keys.
        revision: Hub revision.

    Raises:
        CheckpointError: If the folder holds no safetensors checkpoint or it cannot be read.
    """
    index_path = _fetch(name_or_path, _INDEX, revision)
    if index_path is not None:
        with open(index_path) as f:
            weight_map: dict[str, str] = json.load(f)["weight_map"]
        shards = sorted({shard for key, shard in weight_map.items() if wanted(key)})
    elif _fetch(name_or_path, _SINGLE, revision) is not None:
        shards = [_SINGLE]
    else:
        raise CheckpointError(
            f"No safetensors checkpoint ({_INDEX} or {_SINGLE}) found in {name_or_path!r}. "
            "Save the model with save_pretrained(..., safe_serialization=True)."
        )
    tensors: dict[str, torch.Tensor] = {}
    for shard in shards:
        path = _fetch(name_or_path, shard, revision)
        if path is None:
            raise CheckpointError(f"Shard {shard!r} listed in {_INDEX} is missing from {name_or_path!r}.")
        try:
            with safe_open(path, framework="pt") as f:
                for key in f.keys():
                    if wanted(key):
                        tensors[key] = f.get_tensor(key)
        except Exception as err:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(f"Cannot read checkpoint shard {path!r}: {err}") from err
    return tensors
