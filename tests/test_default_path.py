"""The README's run-folder pipeline on the toy world, as a new user runs it: mine; explain Steering
on a first range, then every live feature, both controls, Top-k and the hybrid; evaluate each; the
toy world's ground truth; compare. Every method must beat both controls with paired intervals
above zero, and every steering row of the run carries the run's one coefficient."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from vis_steer_lens import RunFolder
from vis_steer_lens.cli import main

METHODS = ("steering", "topk", "hybrid")
CONTROLS = ("steering (random direction)", "steering (permuted direction)")
STEERING_FILES = ("steering", "steering-random_norm_matched", "steering-permuted")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("default-path") / "run"
    run = RunFolder(root)

    def cli(*argv: str) -> None:
        assert main(["--quiet", *argv]) == 0, argv

    cli("mine", "--run", str(root), "--n-images", "2000")
    cli("explain", "--run", str(root), "--method", "steering", "--features", "0:64")
    first_choice = run.coefficient()
    sweep_written = run.calibration_sweep_path.stat().st_mtime_ns
    cli("explain", "--run", str(root), "--method", "steering", "--features", "live")  # an extension
    for direction in ("random_norm_matched", "permuted"):
        cli(
            "explain",
            "--run",
            str(root),
            "--method",
            "steering",
            "--direction",
            direction,
            "--features",
            "live",
        )
    for method in ("topk", "hybrid"):
        cli("explain", "--run", str(root), "--method", method, "--features", "live")
    for method, direction in [(m, "sae") for m in METHODS] + [
        ("steering", "random_norm_matched"),
        ("steering", "permuted"),
    ]:
        cli("evaluate", "--run", str(root), "--method", method, "--direction", direction)
    cli("compare", str(root))
    shared = pd.read_csv(run.margins_path)
    cli("evaluate", "--run", str(root), "--scorer", "ground_truth")
    cli("compare", str(root))
    return run, first_choice, sweep_written, shared, pd.read_csv(run.margins_path)


def _check_above_controls(margins: pd.DataFrame) -> None:
    assert {"method_label", "control", "auroc_margin", "auroc_margin_lo", "auroc_margin_hi"} <= set(margins)
    rows = margins.set_index(["method_label", "control"])
    for method in METHODS:
        for control in CONTROLS:
            row = rows.loc[(method, control)]
            assert row["auroc_margin_lo"] > 0, (method, control, row.to_dict())
    for method in METHODS:  # and every method against every other method, in both orders
        assert {other for (m, other) in rows.index if m == method} >= set(METHODS) - {method}


def test_every_method_beats_both_controls_on_every_live_feature(pipeline):
    run, _, _, shared, _ = pipeline
    assert (shared["features"] == "shared").all()
    live = len(run.mined().live_features())
    assert (shared["n_features"] == live).all() and shared["accuracy_margin"].isna().all()
    _check_above_controls(shared)


def test_every_method_beats_both_controls_on_the_clear_features_with_ground_truth(pipeline):
    run, _, _, _, clear = pipeline
    assert (clear["features"] == "clear").all() and (clear["n_features"] >= 30).all()
    _check_above_controls(clear)
    rows = clear.set_index(["method_label", "control"])
    for method in METHODS:
        for control in CONTROLS:
            assert rows.loc[(method, control), "accuracy_margin_lo"] > 0, (method, control)


def test_every_steering_row_carries_the_run_s_one_coefficient(pipeline):
    run, first_choice, sweep_written, _, _ = pipeline
    choice = run.coefficient()
    assert choice == first_choice and choice.rule == "sweep"  # the extension and controls kept it
    assert run.calibration_sweep_path.stat().st_mtime_ns == sweep_written  # and swept nothing again
    for name in STEERING_FILES:
        rows = run.explanations([name])
        assert len(rows) and (rows["coefficient"] == choice.coefficient).all(), name


def test_features_that_never_fired_are_flagged_and_left_out_of_scores(pipeline):
    run = pipeline[0]
    live = set(run.mined().live_features())
    steering = run.explanations(["steering"])
    dead = steering[~steering["feature"].isin(live)]
    assert len(dead) == 64 - len(live & set(range(64))) > 0
    assert (dead["flag"] == "dead").all() and (dead["explanation"] == "").all()
    assert not set(run.scores(names=["steering"])["feature"]) - live


def test_the_sweep_chooses_the_same_multiple_for_three_feature_ranges(pipeline, tmp_path):
    """The coefficient is sampled from the run's live features, whatever range a command names."""
    run = pipeline[0]
    chosen = {"0:64": run.coefficient()}
    for features in ("0:256", "live"):
        other = RunFolder(tmp_path / features.replace(":", "-"))
        shutil.copytree(run.mined_dir, other.mined_dir)
        assert (
            main(["--quiet", "explain", "--run", str(other.root), "--features", features, "--show", "0"]) == 0
        )
        chosen[features] = other.coefficient()
    assert len({(c.multiple, c.coefficient) for c in chosen.values()}) == 1, chosen


def test_the_readme_python_example_gives_the_cli_s_answers(pipeline):
    """README "Explaining features": the same calls, the same rows as the CLI's."""
    from vis_steer_lens import SteeringExplainer, TopKExplainer, mine_top_activations, toy
    from vis_steer_lens.toy import ToyImages

    run = pipeline[0]
    bundle = toy.load()
    vlm, sae = bundle.vlm, bundle.sae
    mined = mine_top_activations(vlm, sae, ToyImages(seed=1, n=2000), k=5, rank_by="max", progress=False)
    cli_mined = run.mined()
    assert mined.live_features() == cli_mined.live_features()
    live = mined.live_features()[:24]
    for feature in live[:8]:
        assert [i for i, _, _ in mined.top_images(feature)] == [
            i for i, _, _ in cli_mined.top_images(feature)
        ]
    steering = SteeringExplainer(vlm, sae, coefficient=run.coefficient().coefficient, prompt="toy")
    ours = steering.explain(live, progress=False)
    theirs = run.explanations(["steering"]).set_index("feature").loc[live]
    assert ours["explanation"].tolist() == theirs["explanation"].tolist()
    topk = TopKExplainer(mined, vlm, display="mask", prompt="toy").explain(live[:8], progress=False)
    cli_topk = run.explanations(["topk"]).set_index("feature").loc[live[:8]]
    assert topk["explanation"].tolist() == cli_topk["explanation"].tolist()
