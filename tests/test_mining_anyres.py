"""Mining an AnyRes family (LLaVA-NeXT, LLaVA-OneVision): each top-k map is the whole image stitched from
its tiles (the geometry's grid), and the heatmap and dashboard code draw it at that grid."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vis_steer_lens import mine_top_activations
from vis_steer_lens.testing import tiny_sae, tiny_vlm

# (width, height): wide (1 x 2 tiles, padding cut), tall (2 x 1), square (2 x 2).
SIZES = [(60, 15), (20, 60), (60, 60), (64, 30)]


@pytest.fixture(scope="module", params=("llava_next", "llava_onevision"))
def setup(request):
    vlm = tiny_vlm(request.param, vision_layers=2)
    sae = tiny_sae(vlm, "blocks.0.hook_resid_post", d_sae=8)
    gen = torch.Generator().manual_seed(0)
    images = [Image.fromarray((torch.rand(h, w, 3, generator=gen) * 255).byte().numpy()) for w, h in SIZES]
    return vlm, sae, images


def _own_map(vlm, sae, image):
    """The SAE codes of one image alone, as a map over its stitched grid ``[h, w, d_sae]``."""
    inputs = vlm.split_inputs(vlm.prompt_inputs([image], "hi"))[1]
    geometry = vlm.image_geometry(**inputs)
    pixel_values = inputs.pop("pixel_values")
    with torch.no_grad():
        _, cache = vlm.vision.run_with_cache(pixel_values, names_filter=sae.cfg.metadata.hook_name, **inputs)
    acts = cache[sae.cfg.metadata.hook_name]
    codes = sae.encode(acts.reshape(-1, acts.shape[-1]))
    return geometry.patch_map(codes, 0)


def test_mined_maps_are_the_stitched_images(setup, tmp_path):
    from vis_steer_lens.dashboard.quantiles import quantile_examples
    from vis_steer_lens.display import heatmap_overlay

    vlm, sae, images = setup
    mined = mine_top_activations(vlm, sae, images, k=4, batch_size=3, out_dir=tmp_path)
    grids = {i: tuple(_own_map(vlm, sae, image).shape[:2]) for i, image in enumerate(images)}
    # Whole images (the unpadded stitched tiles), not one crop: transformers cuts the padding columns too.
    assert grids[0] == (2, 8) and grids[1] == (8, 2) and grids[2] == (8, 8)
    seen = 0
    for feature in range(sae.cfg.d_sae):
        for image_id, score, amap in mined.top_images(feature):
            assert tuple(amap.shape) == grids[image_id]
            if score > 0:
                expected = _own_map(vlm, sae, images[image_id])[..., feature]
                assert (amap - expected).abs().max() <= 1e-4
                seen += 1
                overlay = heatmap_overlay(images[image_id], amap, vlm.vision.cfg.patch_size)
                assert overlay.size == (amap.shape[1] * 8, amap.shape[0] * 8)
    assert seen > 3
    assert int(mined.tokens_seen) == sum(h * w for h, w in grids.values())
    examples = quantile_examples(vlm, sae, images.__getitem__, len(images), [0, 1], batch_size=2)
    for chosen in examples.values():
        for c in chosen:
            assert (len(c["map"]), len(c["map"][0])) == grids[c["image_id"]]
