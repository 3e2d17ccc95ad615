"""Images in, SAE feature activations per patch out: what every scorer measures."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from vis_steer_lens.activations import (
    feature_activations,
    image_feature_maps,
    image_processor_of,
    needs_image_processor,
    to_pixel_values,
    vision_model,
)
from vis_steer_lens.saes.validation import check_sae_fits

# images -> [n, patches, d_sae], or n tensors [patches_i, d_sae] when images have grids of their own
# sizes (native-resolution towers); a stand-in for model + SAE (tests, or features defined by hand).
FeatureEncoder = Callable[[Sequence[Any]], "torch.Tensor | list[torch.Tensor]"]


class SAEImageEncoder:
    """Feature activations of an SAE on images, through the model's vision tower.

    Args:
        model: A HookedViT or HookedVLM.
        sae: A ``sae_lens.SAE`` whose ``cfg.metadata.hook_name`` is a hook of ``model``.
        processor: Image processor for PIL images; the model's own when None.
    """

    def __init__(self, model: Any, sae: Any, processor: Any = None) -> None:
        self.model = model
        self.sae = sae
        self.hook_name = check_sae_fits(sae, model)
        self.processor = processor
        self._image_processor = None

    @property
    def d_sae(self) -> int:
        return int(self.sae.cfg.d_sae)

    def __call__(self, images: Sequence[Any]) -> torch.Tensor | list[torch.Tensor]:
        """Encode one batch.

        Args:
            images: PIL images or ``[channels, H, W]`` pixel tensors.

        Returns:
            ``[batch, patches, d_sae]`` float32 on CPU; on a native-resolution tower, whose images
            keep their own grids (the geometry), one ``[h * w, d_sae]`` per image, row-major.
        """
        images = list(images)
        if needs_image_processor(images) and self._image_processor is None:  # PIL images, integer tensors
            self._image_processor = image_processor_of(self.model, self.processor)
        if vision_model(self.model).variable_grids:
            codes, _ = image_feature_maps(self.model, self.sae, self.hook_name, images, self._image_processor)
            return [c.float().cpu() for c in codes]
        pixel_values = to_pixel_values(images, self._image_processor)
        features = feature_activations(self.model, self.sae, self.hook_name, pixel_values)
        return features.float().cpu()


def make_encoder(
    model: Any, sae: Any, encoder: FeatureEncoder | None, processor: Any = None
) -> FeatureEncoder:
    """The encoder to use: the one given, else one built from ``model`` and ``sae``."""
    if encoder is not None:
        return encoder
    if model is None or sae is None:
        raise ValueError("Pass model= and sae=, or encoder= (a callable images -> [n, patches, d_sae]).")
    return SAEImageEncoder(model, sae, processor)


def pooled_activations(
    encoder: FeatureEncoder, images: Sequence[Any], batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image mean and max over patches of every feature, ``batch_size`` images at a time.

    Returns:
        ``(mean, max)``, each ``[n_images, d_sae]`` float32 on CPU.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    means, maxes = [], []
    for start in range(0, len(images), batch_size):
        acts = encoder(
            images[start : start + batch_size]
        )  # [batch, patches, d_sae] or per image [patches, d_sae]
        if isinstance(acts, (list, tuple)):  # images of their own grid sizes
            if any(a.ndim != 2 for a in acts):
                raise ValueError(
                    "An encoder returning one tensor per image must give [patches, d_sae] each, got shapes "
                    f"{[tuple(a.shape) for a in acts]}."
                )
            means.append(torch.stack([a.mean(dim=0) for a in acts]))
            maxes.append(torch.stack([a.amax(dim=0) for a in acts]))
            continue
        if acts.ndim != 3:
            raise ValueError(
                f"An encoder must return [batch, patches, d_sae], got shape {tuple(acts.shape)}."
            )
        means.append(acts.mean(dim=1))
        maxes.append(acts.amax(dim=1))
    if not means:
        raise ValueError("No images to encode.")
    return torch.cat(means), torch.cat(maxes)
