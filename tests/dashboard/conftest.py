"""A small results folder for the dashboard tests: a tiny random VLM and SAE mined on toy images."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from vis_steer_lens.explain.base import RESULT_COLUMNS
from vis_steer_lens.mining import mine_top_activations
from vis_steer_lens.toy import ToyImages

HOOK = "blocks.1.hook_resid_post"
D_SAE = 8
RUNS = [("steering", "sae"), ("topk", "sae"), ("hybrid", "sae"), ("steering", "random_norm_matched")]


def make_results(root):
    """Mine a random SAE on 24 toy images and add explanations, scores, ground truth and a sweep."""
    from conftest import build_tiny_toy_vlm, random_sae

    vlm = build_tiny_toy_vlm()
    sae = random_sae(d_in=32, d_sae=D_SAE, hook_name=HOOK, k=2)
    mined = mine_top_activations(
        vlm, sae, ToyImages(seed=3, n=24), k=3, batch_size=12, out_dir=root / "mined", progress=False
    )
    rows, scores = [], []
    for i, (method, direction) in enumerate(RUNS):
        for feature in range(D_SAE):
            top = [image_id for image_id, score, _ in mined.top_images(feature) if score > 0]
            text = (
                f"{method} says red circle {feature}"
                if feature % 2 == 0
                else f"{method} blue square {feature}"
            )
            rows.append(
                {
                    "sae_id": mined.sae_id,
                    "feature": feature,
                    "method": method,
                    "direction": direction,
                    "direction_feature": feature,
                    "explanation": text,
                    "raw_generation": f"The image shows a {text}.<end_of_turn>",
                    "coefficient": 4.0 if method != "topk" else None,
                    "empty_image": "white" if method == "steering" else None,
                    "image_ids": json.dumps(top) if method != "steering" else None,
                    "prompt_id": "toy",
                    "model_name": "tiny-toy",
                    "seconds": 0.01,
                }
            )
            scores.append(
                {
                    "sae_id": mined.sae_id,
                    "feature": feature,
                    "method": method,
                    "direction": direction,
                    "method_label": method if direction == "sae" else f"{method} (random direction)",
                    "explanation": text,
                    "auroc_mean": 0.5 + 0.05 * i,
                    "auroc_max": 0.55 + 0.05 * i if feature != 3 else float("nan"),
                }
            )
    pd.DataFrame(rows, columns=RESULT_COLUMNS).to_parquet(root / "explanations.parquet", index=False)
    pd.DataFrame(scores).to_csv(root / "scores.csv", index=False)
    pd.DataFrame(
        [
            {
                "feature": f,
                "best_concept": "red",
                "best_auroc": 0.8,
                "best_category": "color",
                "best_object_concept": "circle" if f % 2 == 0 else "square",
                "best_object_auroc": 0.95,
                "best_object_category": "shape",
                "clear": True,
                "best_is_background": False,
                "fire_rate": 0.3,
            }
            for f in range(0, D_SAE, 2)
        ]
    ).to_csv(root / "feature_concepts.csv", index=False)
    pd.DataFrame(
        {
            "multiple": [0.5, 1.0, 2.0],
            "coefficient": [2.0, 4.0, 8.0],
            "distinct_fraction": [0.2, 0.8, 0.6],
            "degenerate_fraction": [0.0, 0.1, 0.5],
            "score": [0.2, 0.72, 0.3],
            "explanations": ["['a']", "['b']", "['c']"],
            "chosen": [False, True, False],
        }
    ).to_csv(root / "coefficient_sweep.csv", index=False)
    return root


@pytest.fixture(scope="session")
def results_dir(tmp_path_factory):
    return make_results(tmp_path_factory.mktemp("results"))
