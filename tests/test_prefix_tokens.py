"""Prefix tokens (InternViT's class token): left out of patch statistics and maps; steered only if asked."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vis_steer_lens.activations import feature_activations, hook_activations
from vis_steer_lens.explain import SteeringExplainer, SteeringInformedTopKExplainer, TopKExplainer
from vis_steer_lens.image_sources import ListImages
from vis_steer_lens.mining import mine_top_activations
from vis_steer_lens.testing import tiny_sae, tiny_vlm

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def vlm():
    return tiny_vlm("internvl3", seed=4)


@pytest.fixture(scope="module")
def sae(vlm):
    return tiny_sae(vlm, HOOK, d_sae=12, k=4, seed=2)


@pytest.fixture(scope="module")
def images():
    gen = torch.Generator().manual_seed(0)
    colours = torch.randint(0, 256, (12, 3), generator=gen).tolist()
    return ListImages([Image.new("RGB", (32, 32), tuple(c)) for c in colours], name="colours")


def test_feature_activations_leave_the_class_token_out(vlm, sae):
    pixels = torch.randn(2, 3, 32, 32)
    patches = feature_activations(vlm, sae, HOOK, pixels)
    tokens = feature_activations(vlm, sae, HOOK, pixels, include_prefix_tokens=True)
    assert patches.shape == (2, 16, 12) and tokens.shape == (2, 17, 12)
    assert torch.equal(tokens[:, 1:], patches)
    assert not torch.equal(tokens[:, 0], tokens[:, 1])  # the class token is not a patch


def test_mining_maps_cover_the_patch_grid_only(vlm, sae, images):
    mined = mine_top_activations(vlm, sae, images, k=3, batch_size=5, processor=vlm.processor, progress=False)
    assert mined.n_patches == 16 and mined.grid_size == 4
    pixels = vlm.processor.image_processor(
        images=[images[i] for i in range(len(images))], return_tensors="pt"
    )["pixel_values"]
    acts = feature_activations(vlm, sae, HOOK, pixels)  # [images, patches, d_sae]
    best = acts.amax(dim=1).amax(dim=0)  # over patches only
    torch.testing.assert_close(mined.top_scores[:, 0].float(), best.float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mined.max_act.float(), best.float(), atol=1e-5, rtol=1e-5)
    _, _, amap = mined.top_images(0)[0]
    assert tuple(amap.shape) == (4, 4)


def _steered_delta(explainer, features):
    """The change the explainer's steering makes at the hook, ``[rows, tokens, d]``."""
    vit = explainer.model.vision
    seen = {}

    def capture(act, hook):
        seen["act"] = act.detach().clone()

    clean = hook_activations(vit, HOOK, explainer._pixels.expand(len(features), -1, -1, -1))
    with vit.hooks(fwd_hooks=[("blocks.1.hook_resid_pre", capture)]):
        explainer.steered_image_features(explainer.directions(features, features), [30.0] * len(features))
    return seen["act"] - clean


def test_steering_adds_to_patches_unless_asked(vlm, sae):
    for include in (False, True):
        explainer = SteeringExplainer(
            vlm, sae, coefficient=30.0, include_prefix_tokens=include, max_new_tokens=4
        )
        delta = _steered_delta(explainer, [0, 1])
        assert delta[:, 1:].abs().amax() > 1.0  # every patch is steered
        if include:
            assert delta[:, 0].abs().amax() > 1.0
        else:
            assert delta[:, 0].abs().amax() < 1e-4
    rows = SteeringExplainer(vlm, sae, coefficient=30.0, max_new_tokens=4).explain([0, 1, 2], progress=False)
    assert len(rows) == 3 and rows["feature"].tolist() == [0, 1, 2]


def test_topk_and_hybrid_run_and_never_steer_the_class_token(vlm, sae, images):
    mined = mine_top_activations(vlm, sae, images, k=3, batch_size=6, processor=vlm.processor, progress=False)
    topk = TopKExplainer(mined, vlm, max_new_tokens=4).explain([0, 1], progress=False)
    assert len(topk) == 2
    hybrid = SteeringInformedTopKExplainer(mined, vlm, sae=sae, coefficient=2.0, max_new_tokens=4)
    tops = [hybrid._top(0)]
    ((_, add),) = hybrid._steering_hook([0], [0], tops)
    acts = torch.randn(len(tops[0]), 17, 32)
    delta = add(acts.clone(), None) - acts
    assert delta[:, 0].abs().amax() == 0
    active = torch.stack([amap.flatten() > 0 for _, _, amap in tops[0]])
    assert (delta[:, 1:][active].abs().sum(-1) > 0).all() and (delta[:, 1:][~active] == 0).all()
    assert len(hybrid.explain([0, 1], progress=False)) == 2


def test_mining_gives_each_image_one_tile_even_when_the_processor_tiles(vlm, sae):
    """InternVL's processor cuts a wide image into several tiles; statistics are per image."""
    tiling = vlm.processor.image_processor
    tiling.crop_to_patches, tiling.min_patches, tiling.max_patches = True, 1, 6
    try:
        wide = Image.new("RGB", (96, 32), (200, 40, 40))
        assert tiling(images=[wide], return_tensors="pt")["pixel_values"].shape[0] > 1  # tiles on its own
        mined = mine_top_activations(vlm, sae, ListImages([wide, wide], name="wide"), k=2, progress=False)
        assert mined.images_processed == 2
    finally:
        tiling.crop_to_patches = False
