"""Images at quantiles of a feature's activation, found by reading the mined images again."""

from __future__ import annotations

import pytest

from vis_steer_lens.dashboard.quantiles import quantile_examples


def test_quantile_examples_climb_towards_the_top(toy_mined):
    vlm, sae, mined = toy_mined
    features = mined.live_features()
    examples = quantile_examples(
        vlm, sae, mined.image, 40, features, quantiles=(0.1, 0.5, 0.9), batch_size=16
    )
    assert set(examples) == set(features)
    for feature, chosen in examples.items():
        assert [c["quantile"] for c in chosen] == [0.1, 0.5, 0.9]
        scores = [c["score"] for c in chosen]
        assert scores == sorted(scores) and scores[0] > 0
        top = max(s for _, s, _ in mined.top_images(feature))
        assert scores[-1] <= top + 1e-3  # never above the mined top image
        for c in chosen:
            peak = max(max(row) for row in c["map"])
            assert peak == pytest.approx(c["score"], rel=6e-3, abs=2e-3)  # the map (3 digits) is that image's
            assert 0 <= c["image_id"] < 40
    assert quantile_examples(vlm, sae, mined.image, 40, []) == {}


def test_quantile_examples_keep_each_images_own_grid_on_a_native_resolution_tower():
    import torch
    from PIL import Image

    from vis_steer_lens.testing import tiny_sae, tiny_vlm

    vlm = tiny_vlm("qwen2_5_vl", vision_layers=2)
    sae = tiny_sae(vlm, "blocks.1.hook_resid_post", d_sae=8)
    gen = torch.Generator().manual_seed(0)
    sizes = [(48, 32), (32, 64), (80, 30), (40, 40)] * 2
    images = [Image.fromarray((torch.rand(h, w, 3, generator=gen) * 255).byte().numpy()) for w, h in sizes]
    examples = quantile_examples(vlm, sae, images.__getitem__, len(images), list(range(8)), batch_size=3)
    shapes = {(len(c["map"]), len(c["map"][0])) for chosen in examples.values() for c in chosen}
    assert len(shapes) > 1  # maps at several grid shapes, none forced square
    for chosen in examples.values():
        for c in chosen:
            processed = vlm.processor.image_processor(images=[images[c["image_id"]]], return_tensors="pt")
            assert (len(c["map"]), len(c["map"][0])) == tuple(processed["image_grid_thw"][0, 1:].tolist())
