"""Toy-world ground truth: the oracle colour features are found, and explanations are judged by them."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from conftest import build_tiny_toy_vlm, random_sae

from vis_steer_lens.evaluate import GROUND_TRUTH_METHOD, ground_truth_accuracy
from vis_steer_lens.toy import (
    CONCEPTS,
    explanation_is_correct,
    feature_concepts,
    summarize_feature_concepts,
    toy_ground_truth,
)

from .oracle import color_fraction_encoder, red_on_black_encoder


@pytest.fixture(scope="module")
def oracle_concepts():
    return feature_concepts(n_images=300, seed=5, encoder=color_fraction_encoder)


def test_oracle_features_detect_their_colour(oracle_concepts):
    assert len(oracle_concepts) == 2 * len(CONCEPTS)
    assert {"black background", "white background", "red", "top left"} <= set(oracle_concepts["concept"])
    summary = summarize_feature_concepts(oracle_concepts).set_index("feature")
    assert summary.loc[0, "best_concept"] == "red" and summary.loc[0, "best_auroc"] == pytest.approx(1.0)
    assert summary.loc[1, "best_object_concept"] == "blue" and summary.loc[1, "best_category"] == "color"
    assert summary["clear"].all() and not summary["best_is_background"].any()
    red = oracle_concepts.query("feature == 0").set_index("concept")["auroc"]
    assert red["circle"] < 0.7 and red["black background"] < 0.7


def test_patch_level_variant():
    patches = feature_concepts(n_images=100, seed=6, level="patch", encoder=color_fraction_encoder)
    summary = summarize_feature_concepts(patches).set_index("feature")
    assert summary.loc[0, "best_concept"] == "red" and summary.loc[0, "best_auroc"] == pytest.approx(1.0)
    # A patch count, not an image count: 16 patches per image.
    assert patches.set_index(["feature", "concept"]).loc[(0, "black background"), "n_positive"] > 100


def test_background_context():
    concepts = feature_concepts(n_images=300, seed=5, encoder=red_on_black_encoder)
    summary = summarize_feature_concepts(concepts).set_index("feature")
    # The plain colour features fire on both backgrounds and are scored on all scenes.
    assert (summary.loc[[0, 1], "context"] == "all scenes").all()
    assert summary.loc[0, "best_object_auroc"] == pytest.approx(summary.loc[0, "best_object_pooled_auroc"])
    # The red-on-black feature is a perfect red detector on black scenes, not over all scenes.
    assert summary.loc[2, "context"] == "black background"
    assert summary.loc[2, "best_object_concept"] == "red"
    assert summary.loc[2, "best_object_auroc"] == pytest.approx(1.0)
    assert summary.loc[2, "best_object_pooled_auroc"] < 0.85
    assert summary.loc[2, "clear"]
    strict = summarize_feature_concepts(
        feature_concepts(n_images=300, seed=5, encoder=red_on_black_encoder, context=None)
    ).set_index("feature")
    assert not strict.loc[2, "clear"] and strict.loc[0, "clear"]
    with pytest.raises(ValueError, match="context"):
        feature_concepts(n_images=4, encoder=red_on_black_encoder, context="position")


def test_explanation_is_correct():
    assert explanation_is_correct("The highlighted element in the image is a Red circle.", "red")
    assert explanation_is_correct("stripes in the upper left", "top left")
    assert explanation_is_correct("stripes in the upper left", "striped")
    assert not explanation_is_correct("a blue square", "red")
    assert not explanation_is_correct(float("nan"), "red")
    with pytest.raises(ValueError, match="Unknown toy-world concept"):
        explanation_is_correct("red", "scarlet")


def test_ground_truth_accuracy(oracle_concepts):
    explanations = pd.DataFrame(
        {
            "feature": [0, 1, 0, 1, 7],
            "method": ["steering", "steering", "topk", "topk", "topk"],
            "direction": ["sae", "sae", "sae", "permuted", "sae"],
            "explanation": ["red things", "a green ring", "a red square", "blue dots", "anything"],
        }
    )
    table = ground_truth_accuracy(explanations, toy_ground_truth(oracle_concepts)).set_index("method_label")
    assert table.loc["steering", "n_clear"] == 2 and table.loc["steering", "accuracy"] == 0.5
    assert table.loc["topk", "n_clear"] == 1 and table.loc["topk", "accuracy"] == 1.0  # feature 7 is not live
    assert table.loc["topk (permuted direction)", "n_correct"] == 1
    same = ground_truth_accuracy(explanations, toy_ground_truth(summarize_feature_concepts(oracle_concepts)))
    pd.testing.assert_frame_equal(same, table.reset_index())


def test_ground_truth_explanations_name_each_features_concept(oracle_concepts):
    explanations = toy_ground_truth(oracle_concepts).explanations()
    assert explanations["feature"].tolist() == [0, 1]
    assert explanations["explanation"].tolist() == ["red", "blue"]
    assert set(explanations["method"]) == {GROUND_TRUTH_METHOD} and set(explanations["direction"]) == {"sae"}
    # Judged by the ground truth, they are all correct.
    table = ground_truth_accuracy(explanations, toy_ground_truth(oracle_concepts))
    assert table.loc[0, "method_label"] == GROUND_TRUTH_METHOD and table.loc[0, "accuracy"] == 1.0
    # Only the features asked for, and only those with ground truth (feature 7 has none).
    assert toy_ground_truth(oracle_concepts).explanations(features=[1, 7])["feature"].tolist() == [1]
    # A feature with no object concept falls back to its best concept (here a background).
    summary = summarize_feature_concepts(oracle_concepts).assign(best_object_concept=[None, "blue"])
    summary.loc[0, "best_concept"] = "black background"
    assert toy_ground_truth(summary).explanations()["explanation"].tolist() == ["black background", "blue"]


def test_feature_concepts_on_a_tiny_vlm():
    torch.set_num_threads(1)
    vlm = build_tiny_toy_vlm()
    sae = random_sae(d_in=32, d_sae=24, hook_name="blocks.0.hook_resid_post")
    concepts = feature_concepts(vlm, sae, n_images=40, seed=1, batch_size=20)
    assert concepts["feature"].nunique() >= 1
    assert set(concepts["concept"]) == set(CONCEPTS)
    assert concepts["auroc"].dropna().between(0, 1).all()
    summary = summarize_feature_concepts(concepts)
    assert len(summary) == concepts["feature"].nunique()
    with pytest.raises(ValueError, match="level"):
        feature_concepts(vlm, sae, n_images=4, level="pixel")
