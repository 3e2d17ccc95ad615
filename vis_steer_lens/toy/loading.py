"""Load the shipped toy model (and its SAE, once one ships) from the package's assets, offline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vis_steer_lens.hooked_vlm import HookedVLM
from vis_steer_lens.toy.world import ToyWorld

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
#: The toy model's name in results and SAE metadata (not its install path, which varies).
TOY_MODEL_NAME = "vis_steer_lens/toy"


def toy_model_path() -> Path:
    """Folder of the shipped toy model: `save_pretrained` of the model and its processor."""
    return ASSETS_DIR / "model"


def toy_sae_path() -> Path:
    """Folder of the shipped toy SAE (SAELens format); it may not exist yet."""
    return ASSETS_DIR / "sae"


@dataclass
class ToyBundle:
    """Everything needed to experiment on the toy world.

    Attributes:
        vlm: The toy model as a `HookedVLM`, with its processor, in eval mode.
        processor: The toy `Gemma3Processor` (also `vlm.processor`).
        world: A `ToyWorld` to draw scenes from.
        sae: The shipped SAELens SAE on the toy vision tower, or None if none ships.
    """

    vlm: HookedVLM
    processor: Any
    world: ToyWorld
    sae: Any = None


def load(device: str | torch.device = "cpu", world_seed: int = 0) -> ToyBundle:
    """Load the shipped toy model, its processor, a world and (if present) the SAE.

    Args:
        device: Device of the model and SAE.
        world_seed: Seed of the returned `ToyWorld`.

    Raises:
        FileNotFoundError: If the model assets are missing (e.g. a checkout without package data).
    """
    path = toy_model_path()
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"No toy model at {path}; train one with vis_steer_lens.toy.training.train_toy_model and copy "
            "its model/ folder there."
        )
    vlm = HookedVLM.from_pretrained(str(path), device=device, dtype=torch.float32, model_name=TOY_MODEL_NAME)
    if vlm.processor is None:
        raise FileNotFoundError(f"The toy model folder {path} has no processor files.")
    sae = None
    if toy_sae_path().is_dir():
        from vis_steer_lens.saes.loading import load_sae

        sae = load_sae(toy_sae_path(), device=str(device))
    return ToyBundle(vlm=vlm, processor=vlm.processor, world=ToyWorld(world_seed), sae=sae)


__all__ = ["ASSETS_DIR", "TOY_MODEL_NAME", "ToyBundle", "load", "toy_model_path", "toy_sae_path"]
