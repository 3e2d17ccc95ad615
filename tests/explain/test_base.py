"""What every explainer shares: the feature selection, and the permuted control's needs."""

from __future__ import annotations

import pytest
from conftest import build_tiny_toy_vlm, random_sae

from vis_steer_lens.explain import SteeringExplainer, parse_features


def test_feature_selections():
    assert parse_features("0:3,7", d_sae=10) == [0, 1, 2, 7]
    assert parse_features("8:", d_sae=10) == [8, 9]
    assert parse_features(None, d_sae=3) == [0, 1, 2]


@pytest.mark.parametrize(
    "bad, message",
    [
        ("", "names no feature"),
        ("5:5", "is empty"),
        ("10:5", "is empty"),
        ("a:b", "Bad feature selection"),
        ("3,4,3", "more than once"),
        ([2, 2], "more than once"),
    ],
)
def test_selections_that_name_nothing_or_repeat_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_features(bad, d_sae=10)


def test_permuted_needs_two_features():
    vlm = build_tiny_toy_vlm()
    sae = random_sae(d_in=32, d_sae=8, hook_name="blocks.0.hook_resid_post")
    explainer = SteeringExplainer(
        vlm, sae, coefficient=10.0, direction="permuted", prompt="toy", max_new_tokens=2
    )
    with pytest.raises(ValueError, match="at least 2 features"):
        explainer.explain([3], progress=False)
    rows = explainer.explain([3, 5], progress=False)
    assert rows["direction_feature"].tolist() == [5, 3]  # never a feature's own direction
