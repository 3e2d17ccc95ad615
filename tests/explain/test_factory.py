"""make_explainer: one name per method, the method's own settings, clear errors."""

from __future__ import annotations

import pytest

from vis_steer_lens.explain import (
    METHODS,
    SteeringExplainer,
    SteeringInformedTopKExplainer,
    TopKExplainer,
    make_explainer,
)


@pytest.fixture(scope="module")
def setup(toy_mined):
    return toy_mined


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
