"""Training an SAE on a vision hook of a HookedViT / HookedVLM, from images."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import torch
from sae_lens import SAE
from tqdm.auto import tqdm

from vis_steer_lens.activations import (
    TOKEN_SELECTIONS,
    batched,
    image_processor_of,
    image_token_activations,
    iter_images,
    vision_model,
)
from vis_steer_lens.saes.metadata import tower_sae_metadata
from vis_steer_lens.saes.trainer import sae_quality, train_sae_on_activations

logger = logging.getLogger(__name__)


def _activation_stream(
    model: Any,
    hook_name: str,
    image_batches: Iterator[list[Any]],
    image_processor: Any,
    patches_per_image: int | None,
    generator: torch.Generator,
    progress: tqdm | None,
    select_patches: Callable[[list[Any]], tuple[list[Any], Any]] | None = None,
    tokens: str = "patches",
) -> Iterator[torch.Tensor]:
    """Token activations ``[n, d_in]`` chosen by the geometry, one item per image batch."""
    for items in image_batches:
        images, keep = select_patches(items) if select_patches is not None else (items, None)
        per_image, _ = image_token_activations(model, hook_name, images, image_processor, tokens)
        chosen = []
        for i, acts in enumerate(per_image):
            if keep is not None:
                acts = acts[torch.as_tensor(keep[i], dtype=torch.bool, device=acts.device)]
            elif patches_per_image is not None and patches_per_image < acts.shape[0]:
                order = torch.rand(acts.shape[0], generator=generator).argsort()[:patches_per_image]
                acts = acts[order.to(acts.device)]
            chosen.append(acts)
        rows = torch.cat(chosen).float()
        if progress is not None:
            progress.update(rows.shape[0])
        yield rows


def train_sae(
    model: Any,
    hook_name: str,
    images: Any,
    *,
    architecture: str = "topk",
    d_sae: int,
    k: int | None = None,
    total_training_samples: int,
    batch_size: int = 4096,
    image_batch_size: int = 32,
    patches_per_image: int | None = None,
    select_patches: Callable[[list[Any]], tuple[list[Any], Any]] | None = None,
    tokens: str = "patches",
    n_eval_images: int = 64,
    processor: Any = None,
    dataset_name: str | None = None,
    lr: float = 3e-4,
    seed: int = 0,
    progress: bool = True,
    **trainer_kwargs: Any,
) -> tuple[SAE, pd.DataFrame]:
    """Train an SAE on the tokens of a vision hook, streaming images through the tower.

    Images are read once, in order; activations are never all held in memory. The first
    ``n_eval_images`` images are held out and measure the trained SAE; the report (explained
    variance, mean L0, dead-feature fraction) is stored in ``sae.cfg.metadata.training_report``
    and logged.

    Args:
        model: A HookedViT or HookedVLM. Hooks and spliced SAEs active on it stay active.
        hook_name: The vision hook to read, in any naming convention (e.g.
            ``"blocks.2.hook_resid_post"`` or ``"blocks.2.mlp.hook_post"``).
        images: PIL images or ``[channels, H, W]`` pixel tensors: an iterable (may be
            infinite), a folder, or a ``datasets.Dataset`` with an ``image`` column.
        architecture: ``"topk"``, ``"batchtopk"`` or ``"standard"``.
        d_sae: Number of features.
        k: Active features per token (TopK architectures).
        total_training_samples: Patch tokens to train on.
        batch_size: Tokens per optimisation step.
        image_batch_size: Images per forward pass of the tower.
        patches_per_image: Keep this many random patches of each image (``None``: all).
        select_patches: Curate which tokens train the SAE: a function of a batch of raw items
            returning ``(images, keep)``, ``keep`` one bool mask per image over its selected
            tokens (``[batch, patches]`` for fixed grids; a list of ``[h_i * w_i]`` masks for
            images of their own sizes), e.g. to thin out background patches. Not used with
            ``patches_per_image``. The held-out quality report uses every selected token.
        tokens: Which tokens of each image, read from the tower's geometry: ``"patches"``
            (default), ``"prefix"`` (class and register tokens) or ``"all"``. Recorded in the
            SAE's metadata.
        n_eval_images: Held-out images for the quality report.
        processor: Image processor for PIL images; defaults to the HookedVLM's.
        dataset_name: Recorded as ``cfg.metadata.dataset_path``.
        lr: Learning rate.
        seed: Seeds SAE initialisation, shuffling and patch subsampling.
        progress: Show a tqdm bar over training tokens.
        **trainer_kwargs: Passed to :func:`vis_steer_lens.saes.train_sae_on_activations`.

    Returns:
        ``(sae, log)``: the trained ``sae_lens.SAE`` with full vision metadata, and the training log.
    """
    if tokens not in TOKEN_SELECTIONS:
        raise ValueError(f"tokens must be one of {TOKEN_SELECTIONS}, got {tokens!r}.")
    vit = vision_model(model)
    hook = vit.resolve_hook_name(hook_name)
    d_in = vit.hook_width(hook)
    try:
        image_processor = image_processor_of(model, processor)
    except ValueError:
        image_processor = None  # fine for pixel tensors; PIL images then fail with a clear message
    generator = torch.Generator().manual_seed(seed)
    image_iter = iter(images) if isinstance(images, torch.Tensor) else iter_images(images)

    eval_images = list(itertools.islice(image_iter, n_eval_images))
    if select_patches is not None and eval_images:
        eval_images = select_patches(eval_images)[0]
    eval_acts = None
    if eval_images:
        eval_acts = torch.cat(
            list(
                _activation_stream(
                    model,
                    hook,
                    batched(eval_images, image_batch_size),
                    image_processor,
                    None,
                    generator,
                    None,
                    tokens=tokens,
                )
            )
        )

    bar = tqdm(total=total_training_samples, desc=f"SAE {hook}", unit="tok", disable=not progress)
    stream = _activation_stream(
        model,
        hook,
        batched(image_iter, image_batch_size),
        image_processor,
        patches_per_image,
        generator,
        bar,
        select_patches,
        tokens=tokens,
    )
    metadata = tower_sae_metadata(vit, hook, dataset_path=dataset_name, token_selection=tokens)
    try:
        sae, log = train_sae_on_activations(
            stream,
            d_in,
            architecture=architecture,
            d_sae=d_sae,
            k=k,
            total_training_samples=total_training_samples,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            device=str(vit.device),
            metadata=metadata,
            progress=False,  # the token bar above covers training
            **trainer_kwargs,
        )
    finally:
        bar.close()
    if eval_acts is not None:
        report = sae_quality(sae, eval_acts.to(sae.device))
        sae.cfg.metadata.training_report = report
        logger.info(
            "SAE at %s: explained variance %.4f, mean L0 %.1f, dead features %.1f%% (on %d held-out tokens)",
            hook,
            report["explained_variance"],
            report["mean_l0"],
            100 * report["dead_fraction"],
            eval_acts.shape[0],
        )
    return sae, log
