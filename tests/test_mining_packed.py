"""Mining a native-resolution family (Qwen2.5-VL): images of several sizes and aspect ratios, each
top-k map stored and returned at its own grid shape."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vis_steer_lens import MinedActivations, mine_top_activations
from vis_steer_lens.testing import tiny_sae, tiny_vlm

# (width, height) in pixels: landscape, portrait, square, small, wide, tall.
SIZES = [(48, 32), (32, 64), (64, 64), (40, 40), (80, 30), (30, 90)]


@pytest.fixture(scope="module")
def setup():
    vlm = tiny_vlm("qwen2_5_vl", vision_layers=4)
    sae = tiny_sae(vlm, "blocks.2.hook_resid_post", d_sae=16)
    gen = torch.Generator().manual_seed(0)
    images = [Image.fromarray((torch.rand(h, w, 3, generator=gen) * 255).byte().numpy()) for w, h in SIZES]
    return vlm, sae, images


def _own_codes(vlm, sae, image):
    """The SAE codes of one image mined alone, as a map over its grid ``[h, w, d_sae]``."""
    processed = vlm.processor.image_processor(images=[image], return_tensors="pt")
    pixels, grid = processed["pixel_values"], processed["image_grid_thw"]
    geometry = vlm.image_geometry(pixels, image_grid_thw=grid)
    with torch.no_grad():
        _, cache = vlm.vision.run_with_cache(
            pixels, image_grid_thw=grid, names_filter=sae.cfg.metadata.hook_name
        )
        codes = sae.encode(cache[sae.cfg.metadata.hook_name][0])
    return geometry.patch_map(codes, 0)


def test_maps_have_each_images_own_grid_and_values(setup, tmp_path):
    vlm, sae, images = setup
    mined = mine_top_activations(vlm, sae, images, k=3, batch_size=4, out_dir=tmp_path)
    grids = {}
    for index, image in enumerate(images):
        processed = vlm.processor.image_processor(images=[image], return_tensors="pt")
        grids[index] = tuple(processed["image_grid_thw"][0, 1:].tolist())
    assert len(set(grids.values())) == len(images)  # every image its own grid
    assert grids[4] == (4, 10) and grids[5] == (12, 4)  # wide and tall keep their aspect ratio
    seen = 0
    for feature in range(sae.cfg.d_sae):
        for image_id, score, activation_map in mined.top_images(feature):
            assert tuple(activation_map.shape) == grids[image_id]
            if score > 0:
                expected = _own_codes(vlm, sae, images[image_id])[..., feature]
                assert (activation_map - expected).abs().max() <= 1e-4
                assert abs(score - float(expected.max())) <= 1e-4
                seen += 1
    assert seen > 5
    # Saved and loaded, the grids come back.
    loaded = MinedActivations.load(tmp_path, images=images)
    for feature in range(4):
        for (a_id, _, a_map), (b_id, _, b_map) in zip(
            mined.top_images(feature), loaded.top_images(feature), strict=True
        ):
            assert a_id == b_id and torch.equal(a_map, b_map)
    # Frequencies count each image's own patches.
    stats = mined.stats
    total = sum(h * w for h, w in grids.values())
    assert int(mined.tokens_seen) == total
    assert stats["frac_nonzero"].iloc[0] == pytest.approx(float(mined.fire_patches[0]) / total)


def test_mean_ranking_counts_each_images_own_patches(setup):
    vlm, sae, images = setup
    mined = mine_top_activations(vlm, sae, images, k=2, batch_size=3, rank_by="mean", features=[1])
    for _, score, activation_map in mined.top_images(1):
        assert score == pytest.approx(float(activation_map.mean()), abs=1e-5)


def test_map_width_follows_the_images_not_the_processors_bound(setup, tmp_path):
    """The stored maps are as wide as the largest image mined (they grow when a larger one comes),
    not the processor's max_pixels: their memory follows the images. A run resumed with larger
    images and one split in shards of different widths give the same results as one pass."""
    vlm, sae, images = setup
    bound = vlm.vision.max_patches_per_image(vlm.vision.image_processor)
    patches = [
        int(vlm.processor.image_processor(images=[im], return_tensors="pt")["image_grid_thw"][0].prod())
        for im in images
    ]
    whole = mine_top_activations(vlm, sae, images, k=3, batch_size=2, progress=False)
    assert whole.n_patches == max(patches) <= bound
    assert whole.top_maps.shape[-1] == max(patches)
    # Small images first, then the largest: the width grows as they come.
    order = sorted(range(len(images)), key=lambda i: patches[i])
    ordered = [images[i] for i in order]
    first = mine_top_activations(vlm, sae, ordered[:3], k=3, batch_size=2, progress=False)
    assert first.n_patches == max(patches[i] for i in order[:3]) < bound
    grown = mine_top_activations(vlm, sae, ordered, k=3, batch_size=2, progress=False)
    assert grown.n_patches == max(patches)
    shared = 0
    for feature in range(sae.cfg.d_sae):
        kept = {image_id: amap for image_id, _, amap in whole.top_images(feature)}
        scores = sorted(score for _, score, _ in whole.top_images(feature))
        assert sorted(score for _, score, _ in grown.top_images(feature)) == pytest.approx(scores, abs=1e-5)
        for position, _, amap in grown.top_images(feature):  # ties may keep another image
            if order[position] in kept:
                torch.testing.assert_close(amap, kept[order[position]], atol=1e-5, rtol=1e-5)
                shared += 1
    assert shared > sae.cfg.d_sae
    # Shards of different widths merge to one pass.
    from vis_steer_lens.mining.run import _mine_block

    settings = dict(
        k=3, batch_size=2, rank_by="max", features=None, processor=None, hist_bins=64, checkpoint_every=5000
    )
    parts = [
        _mine_block(
            vlm, sae, images, out_dir=None, resume=True, progress=False, image_range=block, **settings
        )
        for block in (range(0, 2), range(2, 6))
    ]
    assert parts[0].n_patches != parts[1].n_patches
    merged = MinedActivations.merge(parts)
    assert merged.n_patches == whole.n_patches
    torch.testing.assert_close(merged.top_maps, whole.top_maps, atol=1e-5, rtol=1e-5)
    assert torch.equal(merged.top_image_ids, whole.top_image_ids)
