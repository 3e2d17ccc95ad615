"""One run folder from the CLI to the dashboard: mine, explain per method, evaluate, compare, dashboard."""

from __future__ import annotations

import pytest
from test_cli import cli_error

from vis_steer_lens import RunFolder
from vis_steer_lens.cli import main

FEATURES = "0:6"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    steps = [
        ["mine", "--run", str(root), "--n-images", "120", "--batch-size", "60"],
        [
            "explain",
            "--run",
            str(root),
            "--method",
            "steering",
            "--features",
            FEATURES,
            "--coefficient",
            "100",
        ],
        ["explain", "--run", str(root), "--method", "topk", "--features", FEATURES],
        ["evaluate", "--run", str(root), "--method", "steering", "--n-reference", "40", "--n-generated", "2"],
        ["evaluate", "--run", str(root), "--method", "topk", "--n-reference", "40", "--n-generated", "2"],
        ["compare", str(root)],
        ["dashboard", str(root)],
    ]
    for step in steps:
        assert main(["--quiet", *step]) == 0, step
    return RunFolder(root)


def test_every_step_wrote_into_the_one_folder(run):
    assert run.contents() == {
        "mined": True,
        "explanations": ["steering", "topk"],
        "scores": ["steering", "topk"],
        "concepts": False,
        "coefficient": True,
        "comparison": True,
    }
    assert run.explanations_export("topk").is_file()
    assert len(list(run.scores_dir.glob("reference.generation_auroc.n40-*.safetensors"))) == 1


def test_compare_tabulates_every_scored_method(run, capsys):
    assert main(["compare", str(run.root)]) == 0
    printed = capsys.readouterr().out
    assert "steering" in printed and "topk" in printed
    import pandas as pd

    table = pd.read_csv(run.comparison_path)
    assert table["method_label"].tolist() == ["steering", "topk"]
    # Features that never fired in the mined images are explained as "dead" and left out of means.
    live = [f for f in run.mined().live_features() if f < 6]
    assert 0 < len(live) < 6 and table["n_features"].tolist() == [len(live), len(live)]
    assert table["auroc_max"].between(0, 1).all()
    dead = run.explanations()
    dead = dead[~dead["feature"].isin(live)]
    assert (
        (dead["flag"] == "dead").all()
        and (dead["explanation"] == "").all()
        and len(dead) == 2 * (6 - len(live))
    )


def test_the_dashboard_shows_both_methods_explanations_and_aurocs(run):
    from vis_steer_lens.dashboard.html import read_feature_data

    pages = read_feature_data(run.dashboard_dir)
    assert len(pages) >= 6
    shown = {}
    for data in pages.values():
        for record in data["explanations"]:
            shown.setdefault(record["method_label"], []).append(record)
    assert set(shown) == {"steering", "topk"}
    live = {f for f in run.mined().live_features() if f < 6}
    for records in shown.values():
        assert len(records) == 6
        scored = [r for r in records if r["flag"] != "dead"]
        assert len(scored) == len(live)
        assert all(r["auroc_max"] is not None and 0 <= r["auroc_max"] <= 1 for r in scored)


def test_a_partial_run_reads_what_is_there(tmp_path):
    run = RunFolder(tmp_path / "empty")
    assert run.explanations() is None and run.scores() is None and not run.has_mined()
    assert "does not exist" in cli_error(main, ["compare", str(run.root)])
    run.root.mkdir()
    assert "holds no scores" in cli_error(main, ["compare", str(run.root)])
    assert (
        main(["--quiet", "explain", "--run", str(run.root), "--features", "0:2", "--coefficient", "50"]) == 0
    )
    assert run.contents()["explanations"] == ["steering"] and not run.contents()["mined"]
    assert "mine --run" in cli_error(
        main, ["--quiet", "explain", "--run", str(run.root), "--method", "topk", "--features", "0:2"]
    )
    assert "no topk explanations" in cli_error(
        main, ["--quiet", "evaluate", "--run", str(run.root), "--method", "topk"]
    )


def test_a_file_is_not_a_run_folder(tmp_path):
    from vis_steer_lens.runs import RunFolderError

    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match="is a file"):
        RunFolder(tmp_path / "file")


def test_an_unfinished_mining_checkpoint_is_not_explained_from(tmp_path):
    from vis_steer_lens.mining import MinedActivations

    run = RunFolder(tmp_path / "run")
    assert main(["--quiet", "mine", "--run", str(run.root), "--n-images", "40", "--batch-size", "20"]) == 0
    mined = MinedActivations.load(run.mined_dir)
    mined.images_processed = 20  # as a checkpoint left by a crash halfway
    mined.save(run.mined_dir)
    assert "unfinished" in cli_error(
        main, ["--quiet", "explain", "--run", str(run.root), "--method", "topk", "--features", "0:2"]
    )


def test_mined_files_get_ordinary_permissions(tmp_path):
    import os
    import stat

    run = RunFolder(tmp_path / "run")
    assert main(["--quiet", "mine", "--run", str(run.root), "--n-images", "10", "--batch-size", "10"]) == 0
    umask = os.umask(0)
    os.umask(umask)
    for path in run.mined_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name


def test_dtype_is_honoured_on_the_toy_world(tmp_path):
    import argparse

    import torch

    from vis_steer_lens.cli import load_model_and_sae

    options = dict(model=None, sae=None, sae_id=None, device="cpu")
    vlm, _, _ = load_model_and_sae(argparse.Namespace(**options, dtype="float64"))
    assert vlm.dtype == torch.float64
    args = ["--quiet", "explain", "--run", str(tmp_path / "r"), "--features", "0:2", "--coefficient", "30"]
    assert main([*args, "--dtype", "bfloat16"]) == 0


def test_other_scorers_through_the_cli_join_compare(run, capsys):
    import pandas as pd

    for method in ("steering", "topk"):
        common = ["--quiet", "evaluate", "--run", str(run.root), "--method", method]
        assert main([*common, "--scorer", "segmentation_iou"]) == 0
        assert (
            main(
                [
                    *common,
                    "--scorer",
                    "likelihood",
                    "--n-pool",
                    "60",
                    "--n-activating",
                    "3",
                    "--n-random",
                    "3",
                ]
            )
            == 0
        )
    assert (
        run.scores_path("topk", "segmentation_iou").is_file()
        and run.scores_path("steering", "likelihood").is_file()
    )
    assert main(["compare", str(run.root)]) == 0
    printed = capsys.readouterr().out
    assert "seg. IoU" in printed and "likelihood" in printed and "Spearman" in printed
    table = pd.read_csv(run.comparison_path)
    for column in ("auroc_max", "segmentation_iou", "segmentation_iou_lo", "likelihood", "likelihood_hi"):
        assert column in table, column
    assert table["segmentation_iou"].between(0, 1).all() and table["likelihood"].between(0, 1).all()
    margins = pd.read_csv(run.margins_path)
    assert {"segmentation_iou_margin", "likelihood_margin"} <= set(margins.columns)
    agreement = pd.read_csv(run.agreement_path)
    assert {"generation_auroc", "segmentation_iou"} <= set(agreement["scorer"]) | set(agreement["other"])
    assert agreement["spearman"].dropna().between(-1, 1).all()
    # A scorer's rows are resumed, not recomputed: the same numbers on a rerun.
    before = run.scores("segmentation_iou")["segmentation_iou"].tolist()
    assert (
        main(
            [
                "--quiet",
                "evaluate",
                "--run",
                str(run.root),
                "--method",
                "topk",
                "--scorer",
                "segmentation_iou",
            ]
        )
        == 0
    )
    assert run.scores("segmentation_iou")["segmentation_iou"].tolist() == before
    assert cli_error(
        main, ["evaluate", "--run", str(run.root), "--scorer", "likelihood", "--features", "clear"]
    ).startswith("error: --features clear needs")


def test_sweep_writes_one_row_per_point_and_its_figure(run, capsys):
    import pandas as pd

    assert (
        main(["--quiet", "sweep", "--run", str(run.root), "--axis", "base-image", "--features", FEATURES])
        == 0
    )
    table = pd.read_csv(run.root / "sweeps" / "base-image.csv")
    assert table["value"].tolist() == ["white", "black", "gray", "mean", "zeros", "noise", "zero-at-hook"]
    assert table["steer_on"].tolist() == ["activation"] * 6 + ["zero"]
    assert (table["n_features"] == 6).all() and table["segmentation_iou"].between(0, 1).all()
    assert (run.root / "sweeps" / "base-image.html").is_file()
    assert "white" in capsys.readouterr().out
    assert main(["--quiet", "sweep", "--run", str(run.root), "--axis", "target", "--features", FEATURES]) == 0
    target = pd.read_csv(run.root / "sweeps" / "target.csv")
    assert target["value"].tolist() == ["steering", "reconstruction", "hybrid", "hybrid-permuted"]
    assert target["steer_on"].fillna("").tolist() == ["activation", "reconstruction", "", ""]
    # This run's coefficient was fixed (100): no patch norm to sweep multiples of. No SAE per layer.
    assert "patch norm" in cli_error(
        main, ["sweep", "--run", str(run.root), "--axis", "coefficient", "--features", FEATURES]
    )
    assert "HOOK=PATH pairs" in cli_error(
        main, ["sweep", "--run", str(run.root), "--axis", "layer", "--saes", "blocks.1.hook_resid_post"]
    )


def test_clip_scorer_through_the_cli_joins_compare(run, tmp_path, capsys):
    import pandas as pd

    from tests.evaluate.tiny_models import tiny_clip

    folder = tmp_path / "tiny-clip"
    folder.mkdir()
    model, processor = tiny_clip(folder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    common = ["--quiet", "evaluate", "--run", str(run.root), "--scorer", "clip", "--clip-model", str(folder)]
    assert main([*common, "--method", "steering", "--k-images", "3"]) == 0
    scores = run.scores("clip")
    explained = run.explanations(["steering"])
    live = explained[explained["flag"].astype(object) != "dead"]
    assert len(scores) == len(live) > 0 and scores["clip_similarity"].dropna().between(-1, 1).all()
    assert (scores["n_images"] <= 3).all() and (scores["n_images"] > 0).any()
    # Resumed, not recomputed: the same numbers on a rerun.
    assert main([*common, "--method", "steering", "--k-images", "3"]) == 0
    assert run.scores("clip")["clip_similarity"].tolist() == pytest.approx(
        scores["clip_similarity"].tolist(), nan_ok=True
    )
    assert main(["compare", str(run.root)]) == 0
    assert "CLIP" in capsys.readouterr().out
    table = pd.read_csv(run.comparison_path)
    assert {"clip", "clip_lo", "clip_hi"} <= set(table.columns)
    assert table.loc[table["method_label"] == "steering", "clip"].between(-1, 1).all()
    assert "could not load the CLIP model" in cli_error(
        main, ["evaluate", "--run", str(run.root), "--scorer", "clip", "--clip-model", str(tmp_path / "none")]
    )


@pytest.mark.slow
def test_explain_selects_the_coefficient_by_segmentation_iou(tmp_path):
    import ast

    import numpy as np
    import pandas as pd

    from vis_steer_lens.evaluate.segmentation_iou import SegmentationIoUScorer
    from vis_steer_lens.plugins import SEGMENTERS

    root = tmp_path / "run"
    assert main(["--quiet", "mine", "--run", str(root), "--n-images", "120", "--batch-size", "60"]) == 0
    assert cli_error(
        main, ["explain", "--run", str(root), "--method", "topk", "--select-by", "likelihood"]
    ).startswith("error: --select-by chooses the run's auto steering coefficient")
    explain = ["--quiet", "explain", "--run", str(root), "--features", FEATURES, "--max-new-tokens", "12"]
    assert main([*explain, "--select-by", "segmentation_iou"]) == 0
    run = RunFolder(root)
    choice = run.coefficient()
    assert choice.select_by == "segmentation_iou" and choice.held_out
    assert not set(choice.sample) & set(range(6))  # validation features held out from those explained
    # The chosen multiple is the argmax of the mean IoU over the grid, recomputed from the sweep's answers.
    sweep = run.sweep()
    scorer = SegmentationIoUScorer(SEGMENTERS.get("toy")(), run.mined())
    means = []
    for answers in sweep["explanations"]:
        answers = ast.literal_eval(answers) if isinstance(answers, str) else answers  # a list, as csv text
        rows = pd.DataFrame({"feature": choice.sample, "explanation": answers, "method": "steering"})
        iou = scorer.score(rows.assign(direction="sae"), progress=False)["segmentation_iou"].to_numpy(float)
        means.append(np.nanmean(iou) if np.isfinite(iou).any() else -np.inf)
    assert choice.selected_scores == pytest.approx(
        [m if np.isfinite(m) else np.nan for m in means], nan_ok=True
    )
    assert choice.multiple == choice.multiples[int(np.argmax(means))]
    # A later explain of the run reuses it; another scorer is refused in one line.
    assert "chosen by 'segmentation_iou'" in cli_error(
        main, ["explain", "--run", str(root), "--features", FEATURES, "--select-by", "likelihood"]
    )


@pytest.mark.slow
def test_the_layer_sweep_scores_each_layer_s_own_sae(run, capsys):
    import pandas as pd

    # The toy world trains its SAEs of the other layers once into the run (tiny here: a test).
    args = ["--quiet", "sweep", "--run", str(run.root), "--axis", "layer", "--layer-sae-tokens", "4096"]
    args += ["--n-ground-truth", "120", "--max-features", "4", "--max-new-tokens", "8"]
    assert main(args) == 0
    table = pd.read_csv(run.root / "sweeps" / "layer.csv")
    assert table["value"].tolist() == [f"blocks.{i}.hook_resid_post" for i in range(4)]
    assert table["layer"].tolist() == [0, 1, 2, 3] and (table["n_features"] <= 4).all()
    assert {"n_live", "accuracy", "n_concepts_named"} <= set(table.columns)
    assert table["accuracy"].dropna().between(0, 1).all()
    assert (run.root / "sweeps" / "layer.html").is_file()
    assert len(list((run.root / "sweeps" / "saes").iterdir())) == 3  # kept for the next sweep
    assert "blocks.3.hook_resid_post" in capsys.readouterr().out


def test_ranks_saving_the_same_coefficient_at_once_never_collide(tmp_path):
    """Under a launcher every rank calibrates and saves the same choice: each write goes through a
    temporary file of its own, so no rank renames away another's (a shared temporary name did)."""
    import threading

    import pandas as pd

    from vis_steer_lens.explain.calibration import CoefficientChoice

    run = RunFolder(tmp_path)
    choice = CoefficientChoice(
        coefficient=12.5,
        rule="fixed",
        sae_id="s",
        hook_name="blocks.0.hook_resid_post",
        empty_image="white",
        prompt_id="toy",
    )
    sweep = pd.DataFrame({"multiple": [1.0, 2.0], "distinct_fraction": [0.5, 0.75]})
    errors: list[BaseException] = []

    def save_many() -> None:
        try:
            for _ in range(200):
                run.save_coefficient(choice, sweep)
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=save_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert run.coefficient().coefficient == 12.5 and run.sweep()["multiple"].tolist() == [1.0, 2.0]
    assert sorted(p.name for p in run.calibration_dir.iterdir()) == [
        "coefficient-sweep.csv",
        "coefficient.json",
    ]
