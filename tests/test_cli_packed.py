"""The command line on a saved tiny Qwen2.5-VL (native resolution, packed images): mine images of several
sizes, explain with Steering, Top-k and the hybrid, score and compare them, then the dashboard and the Neuronpedia export, every
heatmap at its image's own grid shape."""

from __future__ import annotations

import json

import pandas as pd
import torch
from PIL import Image

from vis_steer_lens import MinedActivations
from vis_steer_lens.cli import main
from vis_steer_lens.testing import tiny_sae, tiny_vlm

SIZES = [(48, 32), (32, 64), (64, 64), (40, 40), (80, 30), (30, 90)]


def test_the_pipeline_on_a_packed_family(tmp_path):
    vlm = tiny_vlm("qwen2_5_vl", vision_layers=4)
    vlm.hf_model.save_pretrained(tmp_path / "model")
    vlm.processor.save_pretrained(tmp_path / "model")
    tiny_sae(vlm, "blocks.2.hook_resid_post", d_sae=12).save_model(tmp_path / "sae")
    gen = torch.Generator().manual_seed(0)
    (tmp_path / "images").mkdir()
    for i, (w, h) in enumerate(SIZES * 2):
        pixels = (torch.rand(h, w, 3, generator=gen) * 255).byte().numpy()
        Image.fromarray(pixels).save(tmp_path / "images" / f"{i:02d}.png")
    model = ["--model", str(tmp_path / "model"), "--sae", str(tmp_path / "sae")]
    run = ["--run", str(tmp_path / "run")]
    explain = ["--features", "0:4", "--max-new-tokens", "5"]
    assert (
        main(["mine", "--quiet", *model, *run, "--images", str(tmp_path / "images"), "--k-images", "3"]) == 0
    )
    assert main(["explain", "--quiet", *model, *run, *explain, "--coefficient", "20"]) == 0
    assert main(["explain", "--quiet", *model, *run, *explain, "--method", "topk"]) == 0
    assert main(["explain", "--quiet", *model, *run, *explain, "--method", "hybrid"]) == 0
    # Scoring: the toy world's renderer as the text-to-image model, the mined images as references.
    score = [
        "--images",
        str(tmp_path / "images"),
        "--n-reference",
        "12",
        "--diffusers",
        "toy",
        "--n-generated",
        "2",
    ]
    for method in ("steering", "hybrid"):
        assert main(["evaluate", "--quiet", *model, *run, "--method", method, *score]) == 0
    assert main(["explain", "--quiet", *model, *run, *explain, "--direction", "permuted"]) == 0
    assert main(["evaluate", "--quiet", *model, *run, "--direction", "permuted", *score]) == 0
    assert main(["compare", "--quiet", str(tmp_path / "run")]) == 0
    comparison = pd.read_csv(tmp_path / "run" / "comparison.csv")
    assert {"steering", "hybrid", "steering (permuted direction)"} <= set(comparison["method_label"])
    assert comparison["auroc_max"].between(0, 1).all()
    margins = pd.read_csv(tmp_path / "run" / "margins.csv")
    over_control = margins[(margins["method_label"] == "steering") & (margins["compared_with"] == "control")]
    assert over_control["control"].tolist() == ["steering (permuted direction)"]
    assert over_control["auroc_margin"].notna().all()
    neuronpedia = tmp_path / "neuronpedia"
    assert main(["dashboard", "--quiet", str(tmp_path / "run"), "--neuronpedia", str(neuronpedia)]) == 0

    mined = MinedActivations.load(tmp_path / "run" / "mined")
    shapes = {tuple(amap.shape) for f in range(12) for _, score, amap in mined.top_images(f) if score > 0}
    assert len(shapes) > 2  # maps at several grid shapes
    from vis_steer_lens.dashboard.html import read_feature_data

    # The dashboard carries each map at its image's own grid (drawn over the image in the browser).
    pages = read_feature_data(tmp_path / "run" / "dashboard")
    grids = {(len(t["map"]), len(t["map"][0])) for page in pages.values() for t in page["top"]}
    assert grids == shapes
    batch = json.loads((neuronpedia / "batch-0.json").read_text())
    features = batch["features"] if isinstance(batch, dict) else batch
    lengths = {len(a["tokens"]) for f in features for a in f["activations"]}
    assert all(len(a["tokens"]) == len(a["values"]) for f in features for a in f["activations"])
    assert len(lengths) > 1  # one token per patch of each image's own grid
