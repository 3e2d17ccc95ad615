"""coefficient="auto" selecting by a scorer instead of the distinct-answers rule."""

from __future__ import annotations

import pandas as pd
import pytest

from vis_steer_lens.explain import SteeringExplainer
from vis_steer_lens.explain.sweep import scorer_selector


def test_auto_coefficient_selects_the_best_scoring_multiple(toy_mined):
    vlm, sae, _ = toy_mined
    seen = []

    def prefer_4x(rows: pd.DataFrame) -> float:  # scores 1 at 4x the patch norm, less elsewhere
        seen.append(len(rows))
        multiple = rows["coefficient"].iloc[0] / explainer.patch_norm()
        return -abs(multiple - 4.0)

    explainer = SteeringExplainer(
        vlm,
        sae,
        "auto",
        sweep_multiples=(1.0, 4.0, 16.0),
        sweep_features=3,
        select_by=prefer_4x,
        max_new_tokens=4,
    )
    table = explainer.calibrate([0, 1, 2])
    assert seen == [3, 3, 3] and "selected_score" in table
    chosen = table[table["chosen"]]
    assert len(chosen) == 1 and chosen["multiple"].iloc[0] == 4.0
    assert explainer.chosen_coefficient == pytest.approx(4.0 * explainer.patch_norm())
    # Without a scorer, the distinct-answers rule chooses and there is no selected score.
    default = SteeringExplainer(
        vlm, sae, "auto", sweep_multiples=(1.0, 4.0, 16.0), sweep_features=3, max_new_tokens=4
    )
    assert "selected_score" not in default.calibrate([0, 1, 2])


def test_scorer_selector_is_the_mean_of_the_scorer_column():
    class Fake:
        name = "segmentation_iou"

        def score(self, rows, progress=False):
            assert (rows["method"] == "steering").all()
            return rows.assign(segmentation_iou=[0.2, 0.4, float("nan")])

    select = scorer_selector(Fake())
    assert select(pd.DataFrame({"feature": [0, 1, 2], "explanation": ["a", "b", "c"]})) == pytest.approx(0.3)
