"""Each method's settings and their units: one home for the names and the coefficient checks."""

from __future__ import annotations

import math

import pytest

from vis_steer_lens.explain import HybridSettings, SteeringSettings, TopKSettings, settings_for


def test_settings_say_their_units_and_the_hybrid_reads_auto_as_its_default():
    assert settings_for("steering", coefficient=100.0).coefficient == 100.0
    hybrid = settings_for("hybrid", coefficient="auto", k_images=3)
    assert isinstance(hybrid, HybridSettings) and hybrid.patch_norm_multiple == 1.0 and hybrid.k_images == 3
    assert settings_for("hybrid", coefficient=2.5).patch_norm_multiple == 2.5
    assert isinstance(settings_for("topk", coefficient=3.0, empty_image="black"), TopKSettings)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "strong"])
def test_non_finite_or_non_numeric_coefficients_are_refused(bad):
    with pytest.raises(ValueError, match="coefficient"):
        SteeringSettings(coefficient=bad)
    if not isinstance(bad, str):
        with pytest.raises(ValueError, match="patch_norm_multiple"):
            HybridSettings(patch_norm_multiple=bad)


def test_a_per_feature_nan_is_refused_naming_the_feature():
    with pytest.raises(ValueError, match="feature 7"):
        SteeringSettings(coefficient={3: 1.0, 7: math.nan})


def test_unknown_method_and_display():
    with pytest.raises(ValueError, match="Unknown method"):
        settings_for("lime")
    with pytest.raises(ValueError, match="display"):
        TopKSettings(display="blur")


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_max_new_tokens_must_be_a_positive_integer(bad):
    from vis_steer_lens.explain.settings import check_positive_int

    with pytest.raises(ValueError, match=r"max_new_tokens must be an integer >= 1"):
        check_positive_int(bad, "max_new_tokens")
