"""Training the toy world's SAE on the toy VLM's vision tower."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path
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
#: Hooks of the toy tower's other layers that ``sweep --axis layer`` trains an SAE at (the residual
#: stream after each block; the shipped SAE reads the first).
LAYER_HOOKS = tuple(f"blocks.{layer}.hook_resid_post" for layer in range(4))
#: Training tokens of each layer SAE (the shipped SAE's recipe; ~2-3 min per layer on 2 cores).
LAYER_SAE_TOKENS = 800_000


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


def toy_layer_saes(
    vlm: Any,
    *,
    exclude: Sequence[str] = (),
    cache_dir: str | Path,
    total_training_samples: int = LAYER_SAE_TOKENS,
    hooks: Sequence[str] = LAYER_HOOKS,
    progress: bool = True,
) -> dict[str, SAE]:
    """One toy SAE per layer (:data:`LAYER_HOOKS` but ``exclude``), trained with the shipped recipe
    once and kept in ``cache_dir/<hook>-<tokens>``, loaded from there on later calls.

    Args:
        vlm: The toy HookedVLM.
        exclude: Hooks left out (the run's own SAE's).
        cache_dir: Folder of the trained SAEs.
        total_training_samples: Patch tokens each SAE trains on.
        hooks: The hooks to train at.
        progress: Show training progress bars.

    Returns:
        ``hook -> SAE`` in layer order.
    """
    from vis_steer_lens.atomic import atomic_folder
    from vis_steer_lens.saes.loading import load_sae

    out = {}
    for hook in hooks:
        if hook in exclude:
            continue
        folder = Path(cache_dir) / f"{hook}-{total_training_samples}"
        if not folder.is_dir():
            sae, _ = train_toy_sae(
                vlm, hook, total_training_samples=total_training_samples, progress=progress
            )
            folder.parent.mkdir(parents=True, exist_ok=True)
            with atomic_folder(folder) as tmp:
                sae.save_model(str(tmp))
        out[hook] = load_sae(folder, model=vlm, device=str(vlm.device))
    return out
