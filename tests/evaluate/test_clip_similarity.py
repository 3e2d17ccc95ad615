"""ClipSimilarityScorer on a tiny random CLIP with a tokenizer built locally (nothing downloaded)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vis_steer_lens.evaluate import ClipSimilarityScorer
from vis_steer_lens.toy import ToyWorld

from .tiny_models import tiny_clip


def test_clip_similarity_scores(tmp_path):
    scorer = ClipSimilarityScorer(tiny_clip(tmp_path), batch_size=2)
    images = {f: [image for image, _ in ToyWorld(seed=f).sample(3)] for f in (0, 1)}
    calls = []

    def images_for_feature(feature):
        calls.append(feature)
        return images[feature]

    df = pd.DataFrame(
        {
            "feature": [0, 0, 1, 1],
            "method": ["steering", "topk", "steering", "steering"],
            "direction": ["sae", "sae", "sae", "random_norm_matched"],
            "explanation": ["a red circle", "a red circle", "blue stripes", None],
        }
    )
    scores = scorer.score(df, images_for_feature, progress=False)
    assert calls == [0, 1]  # image embeddings are cached per feature
    assert scores["clip_similarity"].between(-1, 1).all()
    assert scores.loc[0, "clip_similarity"] == pytest.approx(scores.loc[1, "clip_similarity"])
    assert scores.loc[3, "method_label"] == "steering (random direction)"
    # Deterministic, and independent of the batch size.
    again = ClipSimilarityScorer((scorer.model, scorer.processor), batch_size=3).score(
        df, images_for_feature, progress=False
    )
    np.testing.assert_allclose(again["clip_similarity"], scores["clip_similarity"], rtol=1e-5, atol=1e-6)

    # One text against the same image twice: the mean equals the single similarity.
    image = Image.new("RGB", (64, 64), (220, 30, 30))
    one = scorer.similarity("red", [image])
    assert -1 <= one <= 1 and scorer.similarity("red", [image, image]) == pytest.approx(one, abs=1e-6)

    summary = ClipSimilarityScorer.summary(scores)
    assert list(summary["method_label"]) == ["steering", "topk", "steering (random direction)"]
    assert summary.loc[0, "n_features"] == 2
