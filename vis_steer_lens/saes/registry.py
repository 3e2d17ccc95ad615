"""A small registry of published vision SAE releases (``pretrained_vision_saes.yaml``).

A release names a hub repository, the model its SAEs were trained on, their file format and,
for every SAE, its id (the HookedViT hook name it reads) and its folder inside the repository.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.resources import files
from typing import Any

import pandas as pd
import yaml

from vis_steer_lens.families import DEFAULT_FAMILY, canonical_hook_name, family_of_model_name
from vis_steer_lens.hook_names import UnknownHookNameError

REGISTRY_FILENAME = "pretrained_vision_saes.yaml"


class UnknownVisionReleaseError(KeyError):
    """A release name (or an SAE id within a release) that the vision registry lacks."""

    def __str__(self) -> str:  # KeyError would print the message quoted; show it plainly.
        return str(self.args[0])


@dataclass(frozen=True)
class VisionSAERelease:
    """One release of vision SAEs.

    Attributes:
        name: Release name, e.g. ``"gemma-3-4b-it-vision-topk-8192"``.
        repo_id: Hugging Face hub repository holding the SAE folders.
        model: The model the SAEs were trained on.
        format: On-disk format, the name of a converter (``"dictionary_learning"``, ``"saelens"``).
        saes: SAE id (a HookedViT hook name) -> folder path inside ``repo_id``.
        info: Any other fields of the release (``architecture``, ``d_sae``, ``k``, ...).
    """

    name: str
    repo_id: str
    model: str
    format: str
    saes: dict[str, str]
    info: dict[str, Any] = field(default_factory=dict)

    def folder(self, sae_id: str) -> str:
        """Folder inside ``repo_id`` of one SAE.

        Args:
            sae_id: The SAE id; a hook name in any convention is accepted
                (the Bridge or Hugging Face name of layer 16's output finds ``blocks.16.hook_resid_post``).

        Raises:
            UnknownVisionReleaseError: If the release has no such SAE; lists the valid ids.
        """
        if sae_id in self.saes:
            return self.saes[sae_id]
        try:
            canonical = canonical_hook_name(
                sae_id, family=family_of_model_name(self.model, default=DEFAULT_FAMILY)
            )
        except UnknownHookNameError:
            canonical = None
        if canonical in self.saes:
            return self.saes[canonical]
        raise UnknownVisionReleaseError(
            f"Release {self.name!r} has no SAE {sae_id!r}. Valid sae_id values: {list(self.saes)}."
        )


@lru_cache(maxsize=1)
def _load_registry() -> dict[str, VisionSAERelease]:
    text = files("vis_steer_lens.saes").joinpath(REGISTRY_FILENAME).read_text()
    releases: dict[str, VisionSAERelease] = {}
    for name, entry in yaml.safe_load(text).items():
        info = {k: v for k, v in entry.items() if k not in ("repo_id", "model", "format", "saes")}
        releases[name] = VisionSAERelease(
            name=name,
            repo_id=entry["repo_id"],
            model=entry["model"],
            format=entry["format"],
            saes={sae["id"]: sae["path"] for sae in entry["saes"]},
            info=info,
        )
    return releases


def vision_release_names() -> list[str]:
    """Names of all known vision SAE releases."""
    return list(_load_registry())


def is_vision_release(name: str) -> bool:
    """Whether ``name`` is a release of the vision registry."""
    return name in _load_registry()


def get_release(name: str) -> VisionSAERelease:
    """Look up one vision SAE release.

    Args:
        name: Release name, e.g. ``"gemma-3-4b-it-vision-topk-8192"``.

    Raises:
        UnknownVisionReleaseError: If the release is unknown; the message lists the known
            releases and the closest matches.
    """
    registry = _load_registry()
    if name in registry:
        return registry[name]
    close = difflib.get_close_matches(name, list(registry), n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownVisionReleaseError(
        f"Unknown vision SAE release {name!r}.{hint} Known releases: {list(registry)}. "
        "See list_vision_releases() for their SAEs."
    )


def list_vision_releases() -> pd.DataFrame:
    """All known vision SAEs, one row per SAE.

    Returns:
        Columns ``release``, ``sae_id``, ``hook_name``, ``repo_id``, ``model``, ``format``,
        ``path``, ``architecture``, ``d_sae``, ``k``.
    """
    rows = [
        {
            "release": release.name,
            "sae_id": sae_id,
            "hook_name": sae_id,
            "repo_id": release.repo_id,
            "model": release.model,
            "format": release.format,
            "path": path,
            "architecture": release.info.get("architecture"),
            "d_sae": release.info.get("d_sae"),
            "k": release.info.get("k"),
        }
        for release in _load_registry().values()
        for sae_id, path in release.saes.items()
    ]
    return pd.DataFrame(rows)
