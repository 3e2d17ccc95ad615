"""Patch activations per image read the geometry: each image at its own grid on a packed tower, and
the same rows as the batched path on a fixed grid; the scorers' encoder follows."""

from __future__ import annotations

import torch
from PIL import Image

from vis_steer_lens.activations import feature_activations, image_patch_activations, to_pixel_values
from vis_steer_lens.evaluate.encoding import SAEImageEncoder, pooled_activations
from vis_steer_lens.testing import tiny_sae, tiny_vlm

HOOK = "blocks.1.hook_resid_post"


def _images(sizes):
    gen = torch.Generator().manual_seed(0)
    return [Image.fromarray((torch.rand(h, w, 3, generator=gen) * 255).byte().numpy()) for w, h in sizes]


def test_packed_tower_gives_each_image_its_own_grid():
    vlm = tiny_vlm("qwen2_5_vl", vision_layers=2)
    processor = vlm.processor.image_processor
    images = _images([(48, 32), (32, 64), (80, 30)])
    acts, grids = image_patch_activations(vlm, HOOK, images, processor)
    assert len(set(grids)) == 3
    assert [a.shape[0] for a in acts] == [h * w for h, w in grids]
    # Each image alone gives the same rows as inside the packed batch (attention stays in the image).
    for image, batched in zip(images, acts, strict=True):
        alone, _ = image_patch_activations(vlm, HOOK, [image], processor)
        torch.testing.assert_close(alone[0], batched, atol=1e-5, rtol=1e-5)
    sae = tiny_sae(vlm, HOOK, d_sae=10)
    encoded = SAEImageEncoder(vlm, sae)(images)
    assert [tuple(e.shape) for e in encoded] == [(h * w, 10) for h, w in grids]
    mean, peak = pooled_activations(SAEImageEncoder(vlm, sae), images, batch_size=2)
    assert mean.shape == peak.shape == (3, 10)
    torch.testing.assert_close(peak[2], encoded[2].amax(dim=0))


def test_fixed_grid_rows_equal_the_batched_path():
    vlm = tiny_vlm("gemma3", vision_layers=2)
    processor = vlm.processor.image_processor
    images = _images([(40, 40), (64, 32)])
    acts, grids = image_patch_activations(vlm, HOOK, images, processor)
    cfg = vlm.vision.cfg
    assert grids == [(cfg.grid_size, cfg.grid_size)] * 2
    sae = tiny_sae(vlm, HOOK, d_sae=10)
    expected = feature_activations(vlm, sae, HOOK, to_pixel_values(images, processor))
    torch.testing.assert_close(torch.stack([sae.encode(a) for a in acts]), expected)
    torch.testing.assert_close(SAEImageEncoder(vlm, sae)(images), expected.float().cpu())
