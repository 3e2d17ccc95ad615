"""One run folder from the CLI to the dashboard: mine, explain per method, evaluate, compare, dashboard."""

from __future__ import annotations

import json

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
        ["evaluate", "--run", str(root), "--method", "steering", "--n-reference", "40", "--n-images", "2"],
        ["evaluate", "--run", str(root), "--method", "topk", "--n-reference", "40", "--n-images", "2"],
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
        "comparison": True,
    }
    assert run.explanations_export("topk").is_file() and run.reference_path().is_file()


def test_compare_tabulates_every_scored_method(run, capsys):
    assert main(["compare", str(run.root)]) == 0
    printed = capsys.readouterr().out
    assert "steering" in printed and "topk" in printed
    import pandas as pd

    table = pd.read_csv(run.comparison_path)
    assert table["method_label"].tolist() == ["steering", "topk"]
    assert table["n_features"].tolist() == [6, 6]
    assert table["auroc_max"].between(0, 1).all()


def test_the_dashboard_shows_both_methods_explanations_and_aurocs(run):
    pages = sorted((run.dashboard_dir / "data" / "features").glob("*.js"))
    assert len(pages) >= 6
    shown = {}
    for page in pages:
        data = json.loads(page.read_text().split("=", 1)[1].rstrip().rstrip(";"))
        for record in data["explanations"]:
            shown.setdefault(record["method_label"], []).append(record)
    assert set(shown) == {"steering", "topk"}
    for records in shown.values():
        assert len(records) == 6
        assert all(r["auroc_max"] is not None and 0 <= r["auroc_max"] <= 1 for r in records)


def test_a_partial_run_reads_what_is_there(tmp_path):
    run = RunFolder(tmp_path / "empty")
    assert run.explanations() is None and run.scores() is None and not run.has_mined()
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
