"""A small results folder for the dashboard tests: a tiny random VLM and SAE mined on toy images."""

from __future__ import annotations

import json
import os
from pathlib import Path

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


#: In ``triage_results_dir``: the dead feature, the feature whose Top-k answer is a flagged
#: repetition (with the best Top-k AUROC), the one whose methods disagree, and the one whose
#: control alone says "cyan".
DEAD, FLAGGED, DISAGREE, CONTROL_ONLY = 7, 1, 3, 5


@pytest.fixture(scope="session")
def triage_results_dir(results_dir, tmp_path_factory):
    """``results_dir`` with what the index's filters look for: a dead feature, a flagged answer, methods
    that disagree, a control's answer no method gives, the run's comparison and margins, and a
    coefficient sweep whose answers are kept per sampled feature."""
    import shutil

    from vis_steer_lens.explain.calibration import CoefficientChoice
    from vis_steer_lens.mining import MinedActivations
    from vis_steer_lens.runs import RunFolder

    root = tmp_path_factory.mktemp("triage")
    shutil.copytree(results_dir, root, dirs_exist_ok=True)
    mined = MinedActivations.load(root / "mined")
    row = mined.feature_ids.tolist().index(DEAD)
    for name in (
        "fire_images",
        "fire_patches",
        "act_sum",
        "max_act",
        "top_scores",
        "top_maps",
        "hist_counts",
    ):
        getattr(mined, name)[row] = 0
    mined.save(root / "mined")
    explanations = pd.read_parquet(root / "explanations.parquet")
    at = lambda method, direction, feature: (  # noqa: E731
        (explanations["method"] == method)
        & (explanations["direction"] == direction)
        & (explanations["feature"] == feature)
    )
    explanations["flag"] = explanations["flag"].astype(object)
    explanations.loc[at("topk", "sae", FLAGGED), "flag"] = "repetition"
    explanations.loc[at("hybrid", "sae", DISAGREE), "explanation"] = "a green triangle"
    explanations.loc[at("steering", "random_norm_matched", CONTROL_ONLY), "explanation"] = "cyan blob"
    explanations.loc[explanations["feature"] == DEAD, "flag"] = "dead"
    explanations.to_parquet(root / "explanations.parquet", index=False)
    scores = pd.read_csv(root / "scores.csv")
    scores.loc[(scores["method"] == "topk") & (scores["feature"] == FLAGGED), "auroc_mean"] = 0.99
    scores.to_csv(root / "scores.csv", index=False)
    labels = ["steering", "topk", "hybrid", "steering (random direction)"]
    pd.DataFrame(
        {
            "method_label": labels,
            "auroc_mean": [0.71, 0.64, 0.69, 0.52],
            "auroc_mean_lo": [0.6, 0.5, 0.6, 0.4],
            "auroc_mean_hi": [0.8, 0.7, 0.75, 0.6],
        }
    ).to_csv(root / "comparison.csv", index=False)
    pd.DataFrame(
        {
            "method_label": ["steering", "topk", "hybrid"],
            "control": ["steering (random direction)"] * 3,
            "compared_with": ["control"] * 3,
            "features": ["shared"] * 3,
            "n_features": [8, 8, 8],
            "auroc_margin": [0.19, 0.12, 0.17],
            "auroc_margin_lo": [0.1, 0.05, 0.1],
            "auroc_margin_hi": [0.3, 0.2, 0.25],
        }
    ).to_csv(root / "margins.csv", index=False)
    sample = [0, 2]
    sweep = pd.DataFrame(
        {
            "multiple": [0.5, 1.0, 2.0],
            "coefficient": [2.0, 4.0, 8.0],
            "changed_fraction": [0.5, 1.0, 1.0],
            "degenerate_fraction": [0.0, 0.0, 0.5],
            "distinct_fraction": [0.5, 1.0, 0.5],
            "score": [0.5, 1.0, 0.5],
            "working": [False, True, False],
            "chosen": [False, True, False],
            "explanations": [["blank", "red"], ["circle", "square"], ["circle circle circle", "squ"]],
        }
    )
    (root / "coefficient_sweep.csv").unlink()
    choice = CoefficientChoice(
        coefficient=4.0,
        rule="sweep",
        sae_id=mined.sae_id,
        hook_name=HOOK,
        empty_image="white",
        prompt_id="toy",
        multiple=1.0,
        patch_norm=4.0,
        sample=sample,
        pool="8 live features",
        multiples=[0.5, 1.0, 2.0],
    )
    RunFolder(root).save_coefficient(choice, sweep)
    return root


# -- the browser: Debian's chromium driven by Playwright (no `playwright install`) --------------------

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser():
    # CI sets VSL_REQUIRE_BROWSER so that a missing browser fails there instead of skipping.
    missing = pytest.fail if os.environ.get("VSL_REQUIRE_BROWSER") else pytest.skip
    if not Path(CHROMIUM).is_file():
        missing(f"No chromium at {CHROMIUM} (apt-get install -y chromium, or set CHROMIUM=path).")
    try:
        from playwright import sync_api
    except ImportError:
        missing("pip install playwright to run browser tests")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A page that records every console error and uncaught exception; the test fails on any."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on(
        "console",
        lambda msg: errors.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None,
    )
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("requestfailed", lambda req: errors.append(f"request failed: {req.url}"))
    # No network: any http(s) request is a bug (a CDN, a font) and is refused.
    page.route(
        "http*://**", lambda route: (errors.append(f"network request: {route.request.url}"), route.abort())
    )
    page.errors = errors
    yield page
    context.close()
    assert errors == [], errors
