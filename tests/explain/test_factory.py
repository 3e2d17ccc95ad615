"""make_explainer: one name per method, the method's own settings, clear errors."""

from __future__ import annotations

import pytest
from conftest import build_tiny_toy_vlm, random_sae

from vis_steer_lens.explain import (
    METHODS,
    SteeringExplainer,
    SteeringInformedTopKExplainer,
    TopKExplainer,
    make_explainer,
)
from vis_steer_lens.mining import mine_top_activations
from vis_steer_lens.toy import ToyImages


@pytest.fixture(scope="module")
def setup():
    vlm = build_tiny_toy_vlm()
    sae = random_sae(d_in=32, d_sae=8, hook_name="blocks.1.hook_resid_post", k=2)
    mined = mine_top_activations(vlm, sae, ToyImages(seed=3, n=20), k=3, batch_size=20, progress=False)
    return vlm, sae, mined


def test_each_method_builds_its_explainer(setup):
    vlm, sae, mined = setup
    kinds = {"steering": SteeringExplainer, "topk": TopKExplainer, "hybrid": SteeringInformedTopKExplainer}
    assert set(kinds) == set(METHODS)
    for method, kind in kinds.items():
        explainer = make_explainer(
            method, vlm, sae, mined=mined, coefficient=3.0, k_images=2, prompt="toy", direction="permuted"
        )
        assert type(explainer) is kind and explainer.direction == "permuted"
    steering = make_explainer("steering", vlm, sae, coefficient=3.0, empty_image="black", batch_size=5)
    assert (steering.coefficient, steering.empty_image, steering.batch_size) == (3.0, "black", 5)


def test_bad_method_or_missing_mined(setup):
    vlm, sae, _ = setup
    with pytest.raises(ValueError, match="Unknown method"):
        make_explainer("clip", vlm, sae)
    with pytest.raises(ValueError, match="needs mined"):
        make_explainer("hybrid", vlm, sae, coefficient=1.0)
