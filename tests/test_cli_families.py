"""The command line on saved tiny LLaVA-1.5, PaliGemma 2, LLaVA-NeXT and LLaVA-OneVision models: mine, explain with each method, evaluate,
compare, dashboard; and on LLaVA an SAE after the layer the language model reads is refused for steering in
one line, and accepted for mining and Top-k."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from PIL import Image

from vis_steer_lens.cli import main
from vis_steer_lens.testing import tiny_sae, tiny_vlm


def _save(tmp_path, family: str, hook: str, sizes=((40, 40),)):
    vlm = tiny_vlm(family, vision_layers=3)
    vlm.hf_model.save_pretrained(tmp_path / "model")
    vlm.processor.save_pretrained(tmp_path / "model")
    tiny_sae(vlm, hook, d_sae=8).save_model(tmp_path / "sae")
    gen = torch.Generator().manual_seed(0)
    (tmp_path / "images").mkdir()
    for i in range(8):
        width, height = sizes[i % len(sizes)]
        pixels = (torch.rand(height, width, 3, generator=gen) * 255).byte().numpy()
        Image.fromarray(pixels).save(tmp_path / "images" / f"{i:02d}.png")
    return ["--model", str(tmp_path / "model"), "--sae", str(tmp_path / "sae")], [
        "--run",
        str(tmp_path / "run"),
    ]


@pytest.mark.parametrize("family", ["llava", "paligemma", "llava_next", "llava_onevision"])
def test_the_pipeline_on_each_new_family(tmp_path, family):
    # AnyRes families tile images by their aspect ratio: square, wide and tall ones give 4, 2 and 2 tiles.
    sizes = ((40, 40), (60, 20), (20, 50)) if family.startswith("llava_") else ((40, 40),)
    model, run = _save(tmp_path, family, "blocks.1.hook_resid_post", sizes)
    explain = ["--features", "0:3", "--max-new-tokens", "4"]
    images = ["--images", str(tmp_path / "images")]
    assert main(["mine", "--quiet", *model, *run, *images, "--k-images", "3"]) == 0
    assert main(["explain", "--quiet", *model, *run, *explain, "--coefficient", "20"]) == 0
    assert main(["explain", "--quiet", *model, *run, *explain, "--method", "topk"]) == 0
    assert main(["explain", "--quiet", *model, *run, *explain, "--method", "hybrid"]) == 0
    score = [*images, "--n-reference", "8", "--diffusers", "toy", "--n-generated", "2"]
    for method in ("steering", "topk", "hybrid"):
        assert main(["evaluate", "--quiet", *model, *run, "--method", method, *score]) == 0
    assert main(["compare", "--quiet", str(tmp_path / "run")]) == 0
    comparison = pd.read_csv(tmp_path / "run" / "comparison.csv")
    assert {"steering", "topk", "hybrid"} <= set(comparison["method_label"])
    assert comparison["auroc_max"].between(0, 1).all()
    assert main(["dashboard", "--quiet", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "dashboard" / "index.html").exists()
    if family.startswith("llava_"):  # the dashboard's maps are the whole (stitched) images
        from vis_steer_lens.dashboard.html import read_feature_data

        shapes = {
            (len(top["map"]), len(top["map"][0]))
            for feature in read_feature_data(tmp_path / "run" / "dashboard").values()
            for top in feature["top"]
        }
        assert shapes and shapes <= {(8, 8), (4, 8), (8, 4), (2, 8), (8, 2), (6, 8), (8, 6)}
        assert len(shapes) > 1, shapes


def test_llava_refuses_steering_after_its_feature_layer_in_one_line(tmp_path, capsys):
    # Three layers: the language model reads layer 1 (vision_feature_layer=-2); layer 2 never reaches it.
    model, run = _save(tmp_path, "llava", "blocks.2.hook_resid_post")
    explain = ["--features", "0:3", "--max-new-tokens", "4"]
    images = ["--images", str(tmp_path / "images")]
    assert main(["mine", "--quiet", *model, *run, *images, "--k-images", "3"]) == 0
    assert main(["explain", "--quiet", *model, *run, *explain, "--method", "topk"]) == 0
    capsys.readouterr()
    for method in ("steering", "hybrid"):
        with pytest.raises(SystemExit) as exit_info:
            main(["explain", "--quiet", *model, *run, *explain, "--method", method])
        assert exit_info.value.code != 0
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert "blocks.2.hook_resid_post" in err and "blocks.1.hook_resid_post" in err
