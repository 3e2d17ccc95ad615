"""Training the toy world's SAE on the toy VLM's vision tower."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch
from sae_lens import SAE

from vis_steer_lens.saes.training import train_sae
from vis_steer_lens.toy.world import NUM_CELLS, ToyWorld, render_array

#: Where the shipped toy SAE reads (chosen by the comparison reported in the README).
DEFAULT_HOOK = "blocks.0.hook_resid_post"
#: The shipped SAE's width and TopK k (the same README comparison).
DEFAULT_D_SAE = 1024
DEFAULT_K = 32


def toy_pixel_stream(seed: int, image_processor: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """An endless stream of toy-world scenes: ``(pixels [3, 64, 64], object_patches bool [16])``.

    Pixels are normalised as the toy processor does (rescale to [0, 1], then mean 0.5 / std 0.5),
    without a round trip through PIL, because SAE training reads many images.
    """
    world = ToyWorld(seed)
    rng = random.Random(seed)
    mean = torch.tensor(image_processor.image_mean).view(3, 1, 1)
    std = torch.tensor(image_processor.image_std).view(3, 1, 1)
    while True:
        scene = world.sample_scene(rng=rng)
        array = render_array(scene).astype(np.float32) / 255.0
        objects = torch.zeros(NUM_CELLS, dtype=torch.bool)
        objects[[obj.cell for obj in scene.objects]] = True
        yield (torch.from_numpy(array).permute(2, 0, 1) - mean) / std, objects


def thin_background(background_rate: float, seed: int):
    """A ``select_patches`` function for :func:`vis_steer_lens.train_sae`: every object patch, and
    background patches with probability ``background_rate`` (they are ~90% of all patches and
    would otherwise fill the SAE with background-by-position features)."""
    generator = torch.Generator().manual_seed(seed)

    def select(items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[list[torch.Tensor], torch.Tensor]:
        pixels = [pixel for pixel, _ in items]
        objects = torch.stack([mask for _, mask in items])
        keep = objects | (torch.rand(objects.shape, generator=generator) < background_rate)
        return pixels, keep

    return select


def train_toy_sae(
    vlm: Any,
    hook_name: str = DEFAULT_HOOK,
    *,
    d_sae: int = DEFAULT_D_SAE,
    k: int = DEFAULT_K,
    total_training_samples: int = 800_000,
    batch_size: int = 2048,
    lr: float = 1e-3,
    background_rate: float = 0.1,
    seed: int = 0,
    progress: bool = True,
    **kwargs: Any,
) -> tuple[SAE, pd.DataFrame]:
    """Train a TopK SAE on the patch tokens of toy-world scenes at ``hook_name``.

    Args:
        vlm: The toy HookedVLM (``vis_steer_lens.toy.load().vlm``).
        hook_name: Vision hook to read.
        d_sae: Number of features.
        k: Active features per token.
        total_training_samples: Patch tokens to train on.
        background_rate: Share of background patches kept (all object patches are kept).
        batch_size: Tokens per step.
        lr: Learning rate.
        seed: Seeds the scenes and the SAE.
        progress: Show a progress bar.
        **kwargs: Passed to :func:`vis_steer_lens.train_sae`.
    """
    image_processor = vlm.processor.image_processor
    return train_sae(
        vlm,
        hook_name,
        toy_pixel_stream(seed, image_processor),
        select_patches=thin_background(background_rate, seed),
        d_sae=d_sae,
        k=k,
        total_training_samples=total_training_samples,
        batch_size=batch_size,
        image_batch_size=256,
        lr=lr,
        seed=seed,
        dataset_name=f"vis_steer_lens toy world (seed {seed})",
        progress=progress,
        **kwargs,
    )
