"""The run's one steering coefficient: the sweep's rule, the record, and its reuse."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vis_steer_lens import RunFolder
from vis_steer_lens.explain.calibration import (
    PAPER_COEFFICIENT,
    CoefficientChoice,
    CoefficientMismatchError,
    calibrate_run,
)
from vis_steer_lens.explain.sweep import sample_features, sweep_table


def rows(answers: list[str], flagged: int = 0) -> list[dict]:
    return [{"explanation": a, "flag": "repetition" if i < flagged else None} for i, a in enumerate(answers)]


def test_the_sweep_chooses_the_centre_of_the_working_range():
    # 1x leaves every answer unchanged, 2x-16x change them all, 32x breaks half of them.
    table = sweep_table(
        {
            1.0: rows(["blank"] * 4),
            2.0: rows(["red", "blue", "red", "big"]),
            4.0: rows(["red", "blue", "green", "big"]),
            8.0: rows(["red", "blue", "green", "big"]),
            16.0: rows(["red", "blue", "cyan", "big"]),
            32.0: rows(["red red", "blue", "cyan", "big"], flagged=2),
        },
        patch_norm=10.0,
        null_answer="blank",
    )
    assert table["score"].tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.5]
    assert table["working"].tolist() == [False, True, True, True, True, False]
    # The geometric centre of 2x..16x is 5.7x: 4x is nearest on a log scale (8x ties it; the smaller wins).
    assert table.loc[table["chosen"], "multiple"].tolist() == [4.0]
    assert table.loc[table["chosen"], "coefficient"].tolist() == [40.0]


def test_a_zero_multiple_is_never_chosen_and_nothing_changing_takes_the_largest():
    table = sweep_table({0.0: rows(["blank"] * 2), 4.0: rows(["a", "b"])}, 1.0, "blank")
    assert table.loc[table["chosen"], "multiple"].tolist() == [4.0]
    nothing = sweep_table({1.0: rows(["blank"] * 2), 2.0: rows(["blank"] * 2)}, 1.0, "blank")
    assert nothing.loc[nothing["chosen"], "multiple"].tolist() == [2.0]


def test_samples_are_seeded_sorted_and_independent_of_the_pool_order():
    pool = list(range(100))
    assert sample_features(pool, 8, seed=3) == sample_features(pool[::-1], 8, seed=3)
    assert sample_features(pool, 8, seed=3) == sorted(sample_features(pool, 8, seed=3))
    assert sample_features(pool, 8, seed=3) != sample_features(pool, 8, seed=4)
    assert sample_features([5, 2], 8) == [2, 5]


def test_a_choice_round_trips_through_its_json():
    choice = CoefficientChoice(
        12.5, "sweep", "sae/x", "blocks.0.hook_resid_post", "white", "toy", 4.0, 3.125, [1, 2]
    )
    assert CoefficientChoice.from_dict(json.loads(choice.to_json())) == choice
    assert "4x the mean patch norm" in choice.describe()


SWEEP = dict(multiples=(2.0, 8.0), sample_size=4, max_new_tokens=6, batch_size=8, progress=False, log=None)


def test_a_run_calibrates_once_and_every_later_explain_reuses_it(toy_mined, tmp_path):
    vlm, sae, mined = toy_mined
    run = RunFolder(tmp_path / "run")
    mined.save(run.mined_dir)
    choice, explainer = calibrate_run(run, vlm, sae, "auto", prompt="toy", **SWEEP)
    assert explainer is not None and explainer.coefficient == choice.coefficient
    assert choice.rule == "sweep" and set(choice.sample) <= set(mined.live_features())
    assert run.coefficient() == choice and run.sweep() is not None
    assert run.calibration_sweep_path.with_suffix(".html").is_file()
    # Later calls, "auto" or the same number, reuse it; nothing is swept again.
    again, no_sweep = calibrate_run(run, vlm, sae, "auto", prompt="toy", **SWEEP)
    assert again == choice and no_sweep is None
    assert calibrate_run(run, vlm, sae, choice.coefficient, prompt="toy", **SWEEP)[0] == choice
    with pytest.raises(CoefficientMismatchError, match="steers at coefficient"):
        calibrate_run(run, vlm, sae, choice.coefficient * 2, prompt="toy", **SWEEP)
    with pytest.raises(CoefficientMismatchError, match="empty image"):
        calibrate_run(run, vlm, sae, "auto", prompt="toy", empty_image="black", **SWEEP)


def test_a_fixed_or_paper_coefficient_is_the_run_s_without_a_sweep(toy_mined, tmp_path):
    vlm, sae, _ = toy_mined
    paper, explainer = calibrate_run(RunFolder(tmp_path / "paper"), vlm, sae, "paper", prompt="toy", **SWEEP)
    assert (paper.coefficient, paper.rule, explainer) == (PAPER_COEFFICIENT, "paper", None)
    fixed, _ = calibrate_run(RunFolder(tmp_path / "fixed"), vlm, sae, 7.5, prompt="toy", **SWEEP)
    assert (fixed.coefficient, fixed.rule) == (7.5, "fixed")
    assert RunFolder(tmp_path / "fixed").sweep() is None


def test_a_scorer_chooses_the_run_s_multiple_on_held_out_features(toy_mined, tmp_path):
    vlm, sae, mined = toy_mined
    run = RunFolder(tmp_path / "run")
    mined.save(run.mined_dir)
    multiples = (1.0, 2.0, 8.0, 32.0)
    scored_rows = []

    def prefer_8x(rows):  # a constructed scorer: its mean peaks at 8x the patch norm
        scored_rows.append(rows["feature"].tolist())
        multiple = rows["coefficient"].iloc[0] / patch_norm
        return -abs(np.log2(multiple) - 3.0)

    prefer_8x.name = "constructed"
    from vis_steer_lens.explain import SteeringExplainer

    patch_norm = SteeringExplainer(vlm, sae, 1.0, prompt="toy").patch_norm()
    live = mined.live_features()
    explained = live[: len(live) // 2]
    settings = {**SWEEP, "multiples": multiples}
    choice, _ = calibrate_run(
        run, vlm, sae, "auto", prompt="toy", select_by=prefer_8x, explained=explained, **settings
    )
    scores = [-abs(np.log2(m) - 3.0) for m in multiples]
    assert choice.multiple == multiples[int(np.argmax(scores))] == 8.0
    assert choice.select_by == "constructed" and choice.selected_scores == pytest.approx(scores)
    # The validation sample is held out from the features the command explains.
    assert choice.held_out and not set(choice.sample) & set(explained)
    assert all(rows == choice.sample for rows in scored_rows)
    assert run.coefficient() == choice and "by mean constructed on held-out" in choice.describe()
    # Another scorer on the same run is refused; none reuses the run's choice.
    other = lambda rows: 0.0  # noqa: E731
    other.name = "likelihood"
    with pytest.raises(CoefficientMismatchError, match="chosen by 'constructed'"):
        calibrate_run(run, vlm, sae, "auto", prompt="toy", select_by=other, **settings)
    assert calibrate_run(run, vlm, sae, "auto", prompt="toy", **settings)[0] == choice


def test_without_a_scorer_the_distinct_answers_rule_chooses_as_before(toy_mined, tmp_path):
    from vis_steer_lens.explain import SteeringExplainer

    vlm, sae, mined = toy_mined
    run = RunFolder(tmp_path / "run")
    mined.save(run.mined_dir)
    live = mined.live_features()
    choice, _ = calibrate_run(run, vlm, sae, "auto", prompt="toy", explained=live[:2], **SWEEP)
    assert "selected_score" not in run.sweep() and choice.select_by == "distinct"
    # Not held out: the same sample as before scorers could choose, and the same multiple as the
    # explainer's own distinct-answers rule on it.
    assert not choice.held_out and choice.sample == sample_features(live, SWEEP["sample_size"], 0)
    explainer = SteeringExplainer(
        vlm, sae, "auto", prompt="toy", sweep_multiples=SWEEP["multiples"], max_new_tokens=6, batch_size=8
    )
    table = explainer.calibrate(choice.sample)
    assert choice.multiple == table.loc[table["chosen"], "multiple"].iloc[0]
    assert choice.coefficient == pytest.approx(explainer.chosen_coefficient)
