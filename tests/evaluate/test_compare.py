"""compare(): every method and control on the same features, one table, resumable."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vis_steer_lens.evaluate import GROUND_TRUTH_METHOD
from vis_steer_lens.evaluate.compare import (
    DEFAULT_RUNS,
    compare,
    control_margins,
    format_margins,
    format_table,
    paired_margins,
)
from vis_steer_lens.toy import ToyGenerator, ToyImages, toy_ground_truth


@pytest.fixture(scope="module")
def setup(toy_mined):
    vlm, sae, mined = toy_mined
    reference = ToyImages(seed=4, n=12)
    return vlm, sae, mined, [reference[i] for i in range(len(reference))]


def test_compare_runs_every_method_and_tabulates(setup, tmp_path):
    vlm, sae, mined, reference = setup
    features = [0, 1, 2, 3]
    concepts = pd.DataFrame(
        {
            "feature": features,
            "best_object_concept": ["red", "circle", "blue", "large"],
            "clear": [True, True, True, False],
        }
    )
    kwargs = dict(
        mined=mined,
        generator=ToyGenerator(),
        reference_images=reference,
        ground_truth=toy_ground_truth(concepts),
        prompt="toy",
        steering_coefficient=20.0,
        max_new_tokens=6,
        n_images=2,
        k_images=3,
        out_dir=tmp_path,
        progress=False,
    )
    result = compare(vlm, sae, features, **kwargs)
    # Every run explains every feature; the ground-truth row names each feature's concept.
    assert len(result.explanations) == (len(DEFAULT_RUNS) + 1) * len(features)
    truth_rows = result.explanations[result.explanations["method_label"] == GROUND_TRUTH_METHOD]
    assert truth_rows["explanation"].tolist() == ["red", "circle", "blue", "large"]
    labels = result.table["method_label"].tolist()
    assert labels[0] == "steering" and labels[-1] == GROUND_TRUTH_METHOD
    assert len(result.table) == len(DEFAULT_RUNS) + 1
    assert result.table.set_index("method_label").loc[GROUND_TRUTH_METHOD, "accuracy"] == 1.0
    for column in ("auroc_mean", "auroc_mean_lo", "auroc_max", "global_auroc_mean", "accuracy", "n_clear"):
        assert column in result.table
    assert result.table["auroc_mean"].between(0, 1).all()
    assert (result.table["auroc_mean_lo"] <= result.table["auroc_mean"] + 1e-9).all()
    assert len(result.figure.data) == 4
    assert "AUROC mean" in format_table(result.table) and "AUROC max (clear)" in format_table(result.table)
    # The clear-feature AUROC averages the clear features' scores only (feature 3 is not clear).
    steering = result.scores[result.scores["method_label"] == "steering"]
    expected = steering.loc[steering["feature"].isin([0, 1, 2]), "auroc_max"].mean()
    assert result.table.loc[0, "clear_auroc_max"] == pytest.approx(expected)
    assert (result.table["n_clear"] == 3).all()
    # Paired margins: each of the 3 methods and the ground truth over each of the 2 controls,
    # and over each of the 3 others.
    margins = result.margins
    assert len(margins) == 4 * 2 + 4 * 3 and (margins["n_features"] == 3).all()
    assert (margins["features"] == "clear").all()
    margins = margins[margins["compared_with"] == "control"]
    assert set(margins["control"]) == {"steering (random direction)", "steering (permuted direction)"}
    truth_margins = margins[margins["method_label"] == GROUND_TRUTH_METHOD]
    for _, row in truth_margins.iterrows():
        # The ceiling is its own share; a share is undefined when the ceiling is not above the control.
        expected = 1.0 if row["auroc_margin"] > 0 else float("nan")
        assert row["auroc_share_of_ceiling"] == pytest.approx(expected, nan_ok=True)
    # A rerun on the same folder resumes: nothing is generated again, the table is the same.
    again = compare(vlm, sae, features, **kwargs)
    pd.testing.assert_frame_equal(again.table, result.table)
    # Without the ground-truth row: the methods and controls only.
    plain = compare(vlm, sae, features, ground_truth_row=False, **kwargs)
    assert GROUND_TRUTH_METHOD not in set(plain.table["method_label"])
    assert len(plain.margins) == 3 * 2 + 3 * 2 and plain.margins["auroc_share_of_ceiling"].isna().all()


def test_control_margins_are_paired_differences_over_clear_features():
    concepts = pd.DataFrame(
        {
            "feature": [0, 1, 2, 3],
            "best_object_concept": ["red", "blue", "circle", "large"],
            "clear": [True] * 3 + [False],
        }
    )
    rows = []
    for feature, concept in enumerate(["red", "blue", "circle", "large"]):
        rows.append(("steering", feature, f"a {concept} thing", 0.8 + 0.05 * feature))
        rows.append(("steering (random direction)", feature, "blank", 0.5 + 0.05 * feature))
    rows.append(("steering (random direction)", 9, "blank", 0.1))  # not explained by the method: ignored
    scores = pd.DataFrame(rows, columns=["method_label", "feature", "explanation", "auroc_max"])
    scores["is_control"] = scores["method_label"] != "steering"  # controls are marked by the explainers
    margins = control_margins(scores, toy_ground_truth(concepts))
    assert len(margins) == 1
    row = margins.iloc[0]
    assert row["method_label"] == "steering" and row["control"] == "steering (random direction)"
    assert row["n_features"] == 3
    # Every clear feature differs by exactly 0.3 in AUROC and by 1 in correctness: no spread at all.
    assert row["auroc_margin"] == pytest.approx(0.3)
    assert row["auroc_margin_lo"] == pytest.approx(0.3) and row["auroc_margin_hi"] == pytest.approx(0.3)
    assert row["accuracy_margin"] == pytest.approx(1.0)
    assert "+0.300" in format_margins(margins) and "of ceiling" not in format_margins(margins)
    assert margins["auroc_share_of_ceiling"].isna().all()
    # With the ground-truth row (0.4 above the control on every clear feature), steering's 0.3
    # margin is 75% of the ceiling.
    truth = [
        (GROUND_TRUTH_METHOD, f, c, 0.9 + 0.05 * f, False)
        for f, c in enumerate(["red", "blue", "circle", "large"])
    ]
    with_truth = pd.concat([scores, pd.DataFrame(truth, columns=scores.columns)], ignore_index=True)
    shares = control_margins(with_truth, toy_ground_truth(concepts)).set_index("method_label")[
        "auroc_share_of_ceiling"
    ]
    assert shares["steering"] == pytest.approx(0.75) and shares[GROUND_TRUTH_METHOD] == pytest.approx(1.0)
    assert "75%" in format_margins(control_margins(with_truth, toy_ground_truth(concepts)))
    # A method below its control gets a negative margin.
    flipped = scores.assign(
        method_label=scores["method_label"].map(
            {"steering": "steering (random direction)", "steering (random direction)": "steering"}
        ),
        is_control=~scores["is_control"],
    )
    assert control_margins(flipped, toy_ground_truth(concepts)).iloc[0]["auroc_margin"] == pytest.approx(-0.3)


def test_paired_margins_without_ground_truth_cover_every_shared_feature_and_every_method_pair():
    rows = []
    for feature in range(5):
        rows.append(("steering", feature, 0.7, False))
        rows.append(("topk", feature, 0.8 + 0.01 * feature, False))
        rows.append(("steering (permuted direction)", feature, 0.5, True))
    rows.append(("topk", 7, 0.9, False))  # only topk explained feature 7: left out of its pairs
    scores = pd.DataFrame(rows, columns=["method_label", "feature", "auroc_max", "is_control"])
    scores["explanation"] = "x"
    margins = paired_margins(scores).set_index(["method_label", "control"])
    assert set(margins.index) == {
        ("steering", "steering (permuted direction)"),
        ("topk", "steering (permuted direction)"),
        ("steering", "topk"),
        ("topk", "steering"),
    }
    assert (margins["features"] == "shared").all() and (margins["n_features"] == 5).all()
    assert margins.loc[("steering", "steering (permuted direction)"), "auroc_margin"] == pytest.approx(0.2)
    over = margins.loc[("topk", "steering")]
    assert over["compared_with"] == "method" and over["auroc_margin"] == pytest.approx(0.12)
    assert over["auroc_margin_lo"] > 0.1 and over["auroc_margin_hi"] < 0.14
    assert margins.loc[("steering", "topk"), "auroc_margin"] == pytest.approx(-0.12)
    assert margins["accuracy_margin"].isna().all()  # no ground truth, no accuracy
    text = format_margins(paired_margins(scores))
    assert "over the controls" in text and "between methods" in text and "GT accuracy" not in text


def test_other_scorers_get_columns_margins_and_agreement():
    from vis_steer_lens.evaluate.compare import merged_scores, scorer_agreement, tabulate

    concepts = pd.DataFrame(
        {"feature": [0, 1, 2, 3], "best_object_concept": ["red"] * 4, "clear": [True] * 4}
    )
    truth = toy_ground_truth(concepts)
    rows = []
    for feature in range(4):
        rows.append(("steering", feature, "red" if feature < 3 else "blank", False, 0.5 + 0.1 * feature))
        rows.append(("steering (random direction)", feature, "blank", True, 0.2 + 0.1 * feature))
    columns = ["method_label", "feature", "explanation", "is_control", "likelihood"]
    likelihood = pd.DataFrame(rows, columns=columns).assign(
        direction=lambda f: f["is_control"].map({True: "random_norm_matched", False: "sae"}),
        method="steering",
    )
    # Only another scorer ran (no generation AUROC): the table, margins and agreement come from it.
    table, margins = tabulate(None, None, None, truth, extra={"likelihood": likelihood})
    table = table.set_index("method_label")
    assert table.loc["steering", "likelihood"] == pytest.approx(np.mean([0.5, 0.6, 0.7, 0.8]))
    assert table.loc["steering", "clear_likelihood"] == pytest.approx(table.loc["steering", "likelihood"])
    assert table.loc["steering", "accuracy"] == pytest.approx(0.75)
    row = margins[margins["compared_with"] == "control"].iloc[0]
    assert row["likelihood_margin"] == pytest.approx(0.3) and row["likelihood_margin_lo"] == pytest.approx(
        0.3
    )
    assert np.isnan(row["auroc_margin"])
    # Agreement: a second scorer that ranks the explanations exactly alike (and one that reverses them).
    merged = merged_scores(
        None,
        {
            "likelihood": likelihood,
            "detection": likelihood.assign(detection=likelihood["likelihood"] ** 2),
            "clip": likelihood.assign(clip_similarity=-likelihood["likelihood"]),
        },
    )
    agreement = scorer_agreement(merged, truth, n_boot=200).set_index(["scorer", "other"])
    assert agreement.loc[("detection", "likelihood"), "spearman"] == pytest.approx(1.0)
    assert agreement.loc[("clip", "likelihood"), "spearman"] == pytest.approx(-1.0)
    against_truth = agreement.loc[("likelihood", "ground_truth")]
    assert against_truth["features"] == "clear" and against_truth["n"] == 8
    # Correct answers (steering on features 0-2) have the higher likelihoods among these 8.
    assert 0 < against_truth["spearman"] <= 1
    assert merged["method_label"].tolist()[:4] == ["steering"] * 4  # the scorers' order, not sorted
