"""Quality on the shipped toy world: do explanations name the concept a feature really detects?

Ground truth comes from fresh scenes (``feature_concepts``, the same scenes as the demo's); only
features with a clear object concept count. The numbers these tests bound are reported in the
README's demo table.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from vis_steer_lens import toy
from vis_steer_lens.demo import DEMO_SETTINGS
from vis_steer_lens.evaluate import ground_truth_accuracy
from vis_steer_lens.explain import SteeringExplainer, SteeringInformedTopKExplainer, TopKExplainer
from vis_steer_lens.mining import mine_top_activations
from vis_steer_lens.toy import ToyImages, feature_concepts, summarize_feature_concepts, toy_ground_truth

pytestmark = pytest.mark.slow

# Floors below what the shipped SAE measures here (41 clear features; steering 0.66, random direction
# 0.02, permuted 0.22; Top-k 0.66, hybrid 0.80), above what the controls reach.
MIN_CLEAR_FEATURES = 12
STEERING_FLOOR = 0.35
TOPK_FLOOR = 0.5
MIN_MARGIN_OVER_CONTROLS = 0.2
# Issue 6: steering names the concept for a clear majority of the clear features.
STEERING_MAJORITY = 0.6


@pytest.fixture(scope="module")
def world():
    torch.set_num_threads(2)
    bundle = toy.load()
    concepts = feature_concepts(
        bundle.vlm,
        bundle.sae,
        n_images=DEMO_SETTINGS["ground_truth_images"],
        seed=DEMO_SETTINGS["ground_truth_seed"],
    )
    summary = summarize_feature_concepts(concepts)
    clear = sorted(int(f) for f in summary.loc[summary["clear"], "feature"])
    return bundle, summary, clear


def _accuracy(frame: pd.DataFrame, summary: pd.DataFrame) -> float:
    table = ground_truth_accuracy(frame, toy_ground_truth(summary))
    assert len(table) == 1
    return float(table["accuracy"].iloc[0])


@pytest.fixture(scope="module")
def steering(world):
    bundle, summary, clear = world
    explainer = SteeringExplainer(bundle.vlm, bundle.sae, coefficient="auto", prompt="toy", max_new_tokens=24)
    explainer.calibrate()
    coefficient = explainer.chosen_coefficient
    runs = {
        direction: SteeringExplainer(
            bundle.vlm,
            bundle.sae,
            coefficient=coefficient,
            prompt="toy",
            max_new_tokens=24,
            direction=direction,
        ).explain(clear, progress=False)
        for direction in ("sae", "random_norm_matched", "permuted")
    }
    return {direction: _accuracy(frame, summary) for direction, frame in runs.items()}


def test_the_shipped_sae_has_clear_features(world):
    bundle, summary, clear = world
    assert bundle.sae.cfg.metadata.hook_name == "blocks.0.hook_resid_post"
    assert len(clear) >= MIN_CLEAR_FEATURES, summary.sort_values("best_object_auroc").tail(20)
    assert set(summary.loc[summary["clear"], "best_object_category"]) <= {"color", "shape", "size", "texture"}


def test_steering_names_the_concept_far_above_its_controls(steering):
    assert steering["sae"] >= STEERING_FLOOR, steering
    assert steering["sae"] >= steering["random_norm_matched"] + MIN_MARGIN_OVER_CONTROLS, steering
    assert steering["sae"] >= steering["permuted"] + MIN_MARGIN_OVER_CONTROLS, steering


def test_steering_names_the_concept_for_a_clear_majority(steering):
    assert steering["sae"] >= STEERING_MAJORITY, steering


def test_topk_and_hybrid_name_the_concept(world, steering):
    bundle, summary, clear = world
    mined = mine_top_activations(
        bundle.vlm,
        bundle.sae,
        ToyImages(seed=101, n=2000),
        k=5,
        rank_by="max",
        batch_size=250,
        progress=False,
    )
    common = dict(sae=bundle.sae, prompt="toy", max_new_tokens=24, k_images=5)
    topk = TopKExplainer(mined, bundle.vlm, **common).explain(clear, progress=False)
    hybrid = SteeringInformedTopKExplainer(mined, bundle.vlm, coefficient=1.0, **common).explain(
        clear, progress=False
    )
    for name, frame in (("topk", topk), ("hybrid", hybrid)):
        accuracy = _accuracy(frame, summary)
        assert accuracy >= TOPK_FLOOR, (name, accuracy)
        assert accuracy >= steering["random_norm_matched"] + MIN_MARGIN_OVER_CONTROLS, (name, accuracy)


def test_the_shipped_sae_meets_the_feature_count_bar(world):
    # Issue 5: at least 40 live features with a clear non-background concept.
    _, _, clear = world
    assert len(clear) >= 40
