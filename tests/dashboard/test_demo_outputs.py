"""The main job end to end on the shipped toy world: every output file, and a Neuronpedia batch
that SAEDashboard's own parser accepts."""

from __future__ import annotations

import importlib.util
import json
import os

import pandas as pd
import pytest

from vis_steer_lens.cli import main

from .test_neuronpedia import _schema_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_dir(demo_run):
    return demo_run  # the session's one demo run


def test_demo_writes_every_output(demo_dir, capsys):
    for name in (
        "explanations.parquet",
        "scores.csv",
        "comparison.csv",
        "comparison.html",
        "margins.csv",
        "scorer_agreement.csv",
        "feature_concepts.csv",
    ):
        assert (demo_dir / name).is_file(), name
    assert (demo_dir / "dashboard" / "index.html").is_file()
    comparison = pd.read_csv(demo_dir / "comparison.csv")
    assert comparison["method_label"].tolist() == [
        "steering",
        "topk",
        "hybrid",
        "steering (random direction)",
        "steering (permuted direction)",
        "ground truth",
    ]
    margins = pd.read_csv(demo_dir / "margins.csv")
    assert len(margins) == 4 * 2 + 4 * 3  # over each control, and over each other method
    assert set(margins["method_label"]) == {"steering", "topk", "hybrid", "ground truth"}
    ceiling = margins[(margins["method_label"] == "ground truth") & (margins["compared_with"] == "control")]
    assert (ceiling["auroc_margin"] > 0).all() and (ceiling["auroc_share_of_ceiling"] == 1.0).all()
    # Issue 24: the scorers without a diffusion model, beside the AUROC columns; every method above
    # both controls on IoU and on the likelihood, paired on the clear features, intervals above zero.
    for column in ("segmentation_iou", "clear_segmentation_iou", "likelihood", "clear_likelihood"):
        assert comparison[column].between(0, 1).all(), column
    over = margins[(margins["compared_with"] == "control") & (margins["method_label"] != "ground truth")]
    assert len(over) == 6
    assert (over["segmentation_iou_margin_lo"] > 0).all() and (over["likelihood_margin_lo"] > 0).all()
    agreement = pd.read_csv(demo_dir / "scorer_agreement.csv")
    against_truth = agreement[agreement["other"] == "ground_truth"].set_index("scorer")
    assert set(against_truth.index) == {"generation_auroc", "segmentation_iou", "likelihood"}
    assert (against_truth["spearman_lo"] > 0).all()
    explanations = pd.read_parquet(demo_dir / "explanations.parquet")
    record = json.loads((demo_dir / "demo.json").read_text())
    is_truth = explanations["method"] == "ground truth"
    assert (~is_truth).sum() == 5 * record["n_features"] and record["n_features"] > 0
    # The ground-truth row names the concept of every explained feature that has ground truth.
    assert 0 < is_truth.sum() <= record["n_features"]
    # Rerunning resumes from the folder and reproduces the table.
    assert main(["--quiet", "demo", "--out", str(demo_dir)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(demo_dir / "comparison.csv"), comparison)
    # `compare RUN` rebuilds the demo's table and margins from the run folder alone (no model).
    assert main(["compare", str(demo_dir)]) == 0
    assert "ground truth" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_csv(demo_dir / "comparison.csv"), comparison)
    pd.testing.assert_frame_equal(pd.read_csv(demo_dir / "margins.csv"), margins)


def test_demo_neuronpedia_batch_loads_with_saedashboard(demo_dir):
    path = _schema_file()
    if path is None:
        (pytest.fail if os.environ.get("VSL_REQUIRE_SAE_DASHBOARD") else pytest.skip)(
            "SAEDashboard source not found; see tests/dashboard/test_neuronpedia.py for how to provide it."
        )
    spec = importlib.util.spec_from_file_location("_sae_dashboard_np_schema_demo", path)
    schema = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(schema)
    raw = json.loads((demo_dir / "neuronpedia" / "batch-0.json").read_text())
    batch = schema.NeuronpediaDashboardBatch(**raw)
    assert batch.to_dict() == raw and len(batch.features) > 0
