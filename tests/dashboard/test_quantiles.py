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
