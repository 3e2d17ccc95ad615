"""Examples of a feature below its top: images at several quantiles of its activation.

Mining keeps each feature's top k images, which show what the feature is most sure of. How it
behaves when it fires weakly shows in images from lower down its distribution. With the model at
hand, :func:`quantile_examples` reads a sample of the mined images again and, per feature, picks
the images whose peak activation sits nearest each quantile of the feature's peaks over the
images it fired on; no extra mining state is kept.
"""

from __future__ import annotations

from typing import Any

import torch

#: Quantiles of a feature's per-image peak activation shown beside its top images.
QUANTILES = (0.25, 0.5, 0.75)
#: Images read again to find them (the first ones of the mined collection).
N_IMAGES = 2048


@torch.no_grad()
def quantile_examples(
    vlm: Any,
    sae: Any,
    image_of: Any,
    n_images: int,
    features: list[int],
    *,
    quantiles: tuple[float, ...] = QUANTILES,
    batch_size: int = 64,
) -> dict[int, list[dict[str, Any]]]:
    """Per feature, one image at each quantile of its peak activation, with its map.

    Args:
        vlm: The run's model.
        sae: The run's SAE.
        image_of: ``image_id -> image`` (the mined collection's images).
        n_images: Images read, ids ``0 .. n_images - 1``.
        features: Features to find examples for.
        quantiles: Quantiles of the feature's peak activation over the images it fired on.
        batch_size: Images per forward pass.

    Returns:
        ``feature -> [{"quantile", "image_id", "score", "map"}, ...]`` (empty for a feature that
        fired on none of the images read; ``map`` is ``[rows, cols]``, the image's own grid).
    """
    from vis_steer_lens.activations import image_feature_maps, image_processor_of
    from vis_steer_lens.saes.validation import check_sae_fits

    if not features or n_images <= 0:
        return {}
    hook = check_sae_fits(sae, vlm)
    processor = image_processor_of(vlm)
    index = torch.tensor(features)

    grids: dict[int, tuple[int, int]] = {}

    def activations(ids: list[int]) -> list[torch.Tensor]:  # per image [h * w, features], its own grid
        codes, image_grids = image_feature_maps(vlm, sae, hook, [image_of(i) for i in ids], processor)
        grids.update(zip(ids, image_grids, strict=True))
        return [c[..., index.to(c.device)].float().cpu() for c in codes]

    # First pass: each image's peak per feature (small); maps only for the images chosen.
    peaks = []
    for start in range(0, n_images, batch_size):
        acts = activations(list(range(start, min(start + batch_size, n_images))))
        peaks.append(torch.stack([a.amax(dim=0) for a in acts]))
    peak = torch.cat(peaks)  # [images, features]
    picks: dict[int, list[tuple[float, int]]] = {}
    for j, feature in enumerate(features):
        fired = (peak[:, j] > 0).nonzero().flatten()
        picks[int(feature)] = []
        if len(fired):
            values = peak[fired, j]
            for q in quantiles:
                target = torch.quantile(values, q)
                picks[int(feature)].append((q, int(fired[(values - target).abs().argmin()])))
    needed = sorted({i for chosen in picks.values() for _, i in chosen})
    maps: dict[int, torch.Tensor] = {}
    for start in range(0, len(needed), batch_size):
        ids = needed[start : start + batch_size]
        for image_id, acts in zip(ids, activations(ids), strict=True):
            maps[image_id] = acts.to(torch.float16)  # [patches, features]
    out: dict[int, list[dict[str, Any]]] = {}
    for j, feature in enumerate(features):
        out[int(feature)] = [
            {
                "quantile": q,
                "image_id": image_id,
                "score": float(f"{float(peak[image_id, j]):.4g}"),
                "map": [
                    [float(f"{float(v):.3g}") for v in row]
                    for row in maps[image_id][:, j].float().reshape(*grids[image_id]).tolist()
                ],
            }
            for q, image_id in picks[int(feature)]
        ]
    return out


__all__ = ["N_IMAGES", "QUANTILES", "quantile_examples"]
