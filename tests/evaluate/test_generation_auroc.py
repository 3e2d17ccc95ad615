"""GenerationAUROCScorer: an oracle feature, a tiny random toy VLM with a random SAE, and resuming."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import build_tiny_toy_vlm, random_sae

from vis_steer_lens.evaluate import GenerationAUROCScorer, ScoresFileMismatchError, feature_seed
from vis_steer_lens.saes import FeatureIndexError
from vis_steer_lens.toy import ToyGenerator, ToyWorld

from .oracle import color_fraction_encoder

HOOK = "blocks.0.hook_resid_post"


def explanations(rows):
    return pd.DataFrame(
        [
            {"sae_id": "toy", "feature": f, "method": m, "direction": d, "explanation": e}
            for f, m, d, e in rows
        ]
    )


@pytest.fixture(scope="module")
def reference_images():
    # One object per image: ~11% of the negatives then hold red (or blue), so even a perfect colour
    # feature tops out near 0.94; with two objects (~16%) the ceiling drops to about 0.9.
    return [image for image, _ in ToyWorld(seed=99, max_objects=1).sample(120)]


def test_oracle_red_feature(reference_images):
    scorer = GenerationAUROCScorer(
        None, None, ToyGenerator(), reference_images, n_images=6, encoder=color_fraction_encoder
    )
    df = explanations(
        [
            (0, "steering", "sae", "The highlighted element in the image is a red circle"),
            (0, "topk", "sae", "a blue square"),
            (1, "steering", "sae", "blue"),
            (1, "steering", "permuted", "red things"),
        ]
    )
    scores = scorer.score(df, progress=False)
    assert list(scores["feature"]) == [0, 0, 1, 1]
    red, blue_for_red, blue, red_for_blue = scores.to_dict("records")
    assert red["auroc_max"] > 0.9 and red["auroc_mean"] > 0.9
    assert blue_for_red["auroc_max"] < 0.6
    assert blue["auroc_max"] > 0.9
    assert red_for_blue["auroc_max"] < 0.6
    assert red_for_blue["method_label"] == "steering (permuted direction)"
    assert len(red["positives_max"]) == 6 and red["n_negatives"] == 120

    summary = scorer.summary(scores)
    assert set(summary["method_label"]) == {"steering", "topk", "steering (permuted direction)"}
    steering = summary.set_index("method_label").loc["steering"]
    assert steering["n_features"] == 2
    assert steering["global_auroc_max"] > 0.9
    assert steering["auroc_max_lo"] <= steering["auroc_max"] <= steering["auroc_max_hi"]
    paper_style = scorer.summary(scores, negatives_per_feature=6)
    assert paper_style.set_index("method_label").loc["steering", "global_auroc_max"] > 0.8


def test_generated_images_show_the_named_concept_and_are_seeded(reference_images):
    generator = ToyGenerator()
    scorer = GenerationAUROCScorer(
        None, None, generator, reference_images[:10], n_images=4, seed=7, encoder=color_fraction_encoder
    )
    text = "a striped triangle at the top left"
    images = scorer.generated_images(text, feature=1)
    scenes = generator.scenes(text, 4, feature_seed(7, 1))
    assert all({"striped", "triangle", "top left"} <= scene.concepts() for scene in scenes)
    again = scorer.generated_images(text, feature=1)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, again, strict=True))
    other = scorer.generated_images(text, feature=0)
    assert not all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, other, strict=True))


@pytest.fixture(scope="module")
def vlm():
    return build_tiny_toy_vlm()


@pytest.fixture(scope="module")
def sae():
    return random_sae(d_in=32, d_sae=24, hook_name=HOOK)


def test_tiny_vlm_with_random_sae_and_resume(vlm, sae, reference_images, tmp_path):
    torch.set_num_threads(1)
    df = explanations(
        [
            (3, "steering", "sae", "a red circle"),
            (3, "topk", "sae", "a green square"),
            (5, "steering", "random_norm_matched", "a dotted ring"),
        ]
    )

    def scorer():
        return GenerationAUROCScorer(
            vlm, sae, ToyGenerator(), reference_images[:24], n_images=3, batch_size=8
        )

    first = scorer()
    ref_mean, ref_max = first.reference_activations()
    assert ref_mean.shape == ref_max.shape == (24, 24)
    assert (ref_max >= ref_mean).all()
    out = tmp_path / "scores.jsonl"
    partial = first.score(df.iloc[:2], progress=False, out_path=out)
    assert partial.shape[0] == 2
    assert len(out.read_text().splitlines()) == 2

    # A fresh scorer resumes: only the third row is new, and re-scored rows are identical.
    second = scorer()
    calls = []
    original = second._score_rows
    second._score_rows = lambda rows: calls.append(len(rows)) or original(rows)
    full = second.score(df, progress=False, out_path=out)
    assert calls == [1]
    assert len(out.read_text().splitlines()) == 3
    pd.testing.assert_frame_equal(full.iloc[:2].reset_index(drop=True), partial)
    assert full["auroc_mean"].between(0, 1).all() and full["auroc_max"].between(0, 1).all()

    # Deterministic: a scorer without the file reproduces the same positives.
    fresh = scorer().score(df, progress=False)
    np.testing.assert_allclose(np.stack(fresh["positives_max"]), np.stack(full["positives_max"]), rtol=1e-5)

    # A torn last line (a run killed mid-write) is cut off and rescored.
    with open(out, "a") as f:
        f.write('{"sae_id": "toy", "feat')
    scorer().score(df, progress=False, out_path=out)
    lines = out.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines)

    with pytest.raises(ScoresFileMismatchError, match="n_images"):
        GenerationAUROCScorer(vlm, sae, ToyGenerator(), reference_images[:4], n_images=2).score(
            df, progress=False, out_path=out
        )
    with pytest.raises(FeatureIndexError):
        scorer().score(explanations([(99, "steering", "sae", "red")]), progress=False)
    with pytest.raises(ValueError, match="explanation"):
        scorer().score(pd.DataFrame({"feature": [1]}), progress=False)


def test_explanations_of_another_sae_are_refused():
    from conftest import build_tiny_toy_vlm, random_sae

    from vis_steer_lens.saes import SAEModelMismatchError
    from vis_steer_lens.saes.metadata import sae_identity
    from vis_steer_lens.toy import ToyGenerator, ToyImages

    vlm = build_tiny_toy_vlm()
    sae = random_sae(d_in=32, d_sae=8, hook_name="blocks.0.hook_resid_post")
    other = random_sae(d_in=32, d_sae=8, hook_name="blocks.0.hook_resid_post", seed=5)
    scorer = GenerationAUROCScorer(
        vlm, sae, ToyGenerator(), [ToyImages(seed=1, n=4)[i] for i in range(4)], n_images=1
    )
    rows = pd.DataFrame({"feature": [0], "explanation": ["red"], "sae_id": [sae_identity(other)]})
    with pytest.raises(SAEModelMismatchError, match="scorer measures SAE"):
        scorer.score(rows, progress=False)
    assert len(scorer.score(rows.assign(sae_id=sae_identity(sae)), progress=False)) == 1


def test_evidence_images_are_kept_once_per_row(reference_images, tmp_path):
    from PIL import Image

    evidence = tmp_path / "evidence"
    scorer = GenerationAUROCScorer(
        None,
        None,
        ToyGenerator(),
        reference_images,
        n_images=4,
        encoder=color_fraction_encoder,
        evidence_dir=evidence,
        evidence_images=3,
    )
    df = explanations([(0, "steering", "sae", "a red circle"), (1, "topk", "sae", "a blue square")])
    out = tmp_path / "scores.jsonl"
    scores = scorer.score(df, progress=False, out_path=out)
    kept = scores["evidence"].tolist()
    assert [k["images"] for k in kept] == [3, 3] and len({k["file"] for k in kept}) == 2
    strip = Image.open(evidence / kept[0]["file"])
    drawn = scorer.generated_images("a red circle", 0)[:3]
    assert strip.size == (sum(i.width for i in drawn), max(i.height for i in drawn))  # 64 px toy images
    # The strip holds the drawn images left to right, as generated.
    first = np.asarray(strip.crop((0, 0, drawn[0].width, drawn[0].height)))
    assert np.array_equal(first, np.asarray(drawn[0].convert("RGB")))
    files = sorted(p.name for p in evidence.iterdir())
    assert files == sorted(k["file"] for k in kept)
    # Resuming scores nothing again and keeps the rows' evidence.
    again = scorer.score(df, progress=False, out_path=out)
    assert again["evidence"].tolist() == kept and sorted(p.name for p in evidence.iterdir()) == files
    assert (
        GenerationAUROCScorer(
            None, None, ToyGenerator(), reference_images, n_images=2, encoder=color_fraction_encoder
        )
        .score(df, progress=False)["evidence"]
        .isna()
        .all()
    )  # no folder, no evidence
