"""Likelihood and detection scorers on a tiny random toy VLM: held-out images, the log-probabilities and P(yes)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from vis_steer_lens.evaluate.metrics import auroc
from vis_steer_lens.evaluate.vlm_scorers import (
    DetectionScorer,
    LikelihoodScorer,
    VLMScorerError,
    pooled_auroc,
)


@pytest.fixture(scope="module")
def pool(toy_mined):
    return toy_mined[2].images  # the mined ToyImages: the explainer's top images must be left out


def _rows(features):
    return pd.DataFrame(
        {
            "feature": [f for f in features for _ in range(2)],
            "explanation": ["red circle", "blue"] * len(features),
            "method": ["steering", "topk"] * len(features),
        }
    )


def test_held_out_images_leave_out_what_the_explainer_saw(toy_mined, pool):
    vlm, sae, mined = toy_mined
    scorer = LikelihoodScorer(vlm, sae, pool, mined=mined, n_activating=3, n_random=4, seed=1)
    _, pool_max = scorer.pool()
    for feature in mined.live_features()[:3]:
        activating, randoms = scorer.held_out_images(feature)
        seen = {int(t[0]) for t in mined.top_images(feature)}
        assert not seen & set(activating) and not seen & set(randoms)
        assert not set(activating) & set(randoms) and len(randoms) == 4
        acts = pool_max[:, feature]
        assert all(acts[i] > 0 for i in activating)
        assert list(acts[activating]) == sorted(acts[activating].tolist(), reverse=True)
        assert scorer.held_out_images(feature) == (activating, randoms)  # deterministic


def test_likelihood_is_the_answer_log_probability_minus_the_empty_image(toy_mined, pool):
    vlm, sae, mined = toy_mined
    scorer = LikelihoodScorer(vlm, sae, pool, mined=mined, n_activating=3, n_random=3)
    images, _ = scorer.pool()
    # By hand for one image: the templated prompt with the image, then the answer's tokens.
    tokenizer = vlm.processor.tokenizer
    answer = tokenizer("red circle", add_special_tokens=False)["input_ids"]
    inputs = vlm.prompt_inputs([images[0]], "Describe the image.")
    ids = torch.cat([inputs["input_ids"], torch.tensor([answer])], dim=1)
    extra = {
        k: torch.cat([v, torch.full((1, len(answer)), int(k == "attention_mask"))], dim=1)
        for k, v in inputs.items()
        if k in ("attention_mask", "token_type_ids")
    }
    with torch.no_grad():
        logits = vlm.forward(ids, pixel_values=inputs["pixel_values"], **extra)
    logp = torch.log_softmax(logits[0, -len(answer) - 1 : -1].float(), dim=-1)
    expected = float(logp[torch.arange(len(answer)), torch.tensor(answer)].sum())
    got = scorer.answer_logprobs("red circle", scorer._soft_tokens([0]))
    assert float(got[0]) == pytest.approx(expected, abs=1e-4)

    feature = mined.live_features()[0]
    scored = scorer.score(_rows([feature]), progress=False)
    row = scored.iloc[0]
    assert row["likelihood"] == pytest.approx(auroc(row["activating_scores"], row["random_scores"]))
    activating, _ = scorer.held_out_images(feature)
    raw = scorer.answer_logprobs("red circle", scorer._soft_tokens(activating[:1]))
    empty = scorer.answer_logprobs("red circle", scorer._empty_tokens("white").unsqueeze(0))
    assert row["activating_scores"][0] == pytest.approx(float(raw[0] - empty[0]), abs=1e-4)
    assert 0.0 <= pooled_auroc(scored) <= 1.0


def test_detection_is_p_yes_over_yes_and_no(toy_mined, pool, tmp_path):
    vlm, sae, mined = toy_mined
    scorer = DetectionScorer(vlm, sae, pool, mined=mined, n_activating=3, n_random=3)
    images, _ = scorer.pool()
    p = scorer.p_yes("red", scorer._soft_tokens([0, 1]))
    assert p.shape == (2,) and bool(((p > 0) & (p < 1)).all())
    inputs = vlm.prompt_inputs([images[1]], 'Does this image show "red"? Answer yes or no.')
    with torch.no_grad():
        probs = torch.softmax(vlm.forward(**inputs)[0, -1].float(), dim=-1)
    yes, no = probs[scorer.yes_ids].sum(), probs[scorer.no_ids].sum()
    assert float(p[1]) == pytest.approx(float(yes / (yes + no)), abs=1e-4)
    features = mined.live_features()[:2]
    scored = scorer.score(_rows(features), progress=False, out_path=tmp_path / "d.jsonl")
    assert len(scored) == 4 and scored["detection"].between(0, 1).all()
    again = DetectionScorer(vlm, sae, pool, mined=mined, n_activating=3, n_random=3)
    again.p_yes = lambda *a: pytest.fail("a resumed row was scored again")
    resumed = again.score(_rows(features), progress=False, out_path=tmp_path / "d.jsonl")
    assert np.allclose(resumed["detection"], scored["detection"])


def test_bad_settings_are_one_line(toy_mined, pool):
    vlm, sae, mined = toy_mined
    with pytest.raises(VLMScorerError, match="no single token for yes"):
        DetectionScorer(vlm, sae, pool, yes_tokens=("zzqx",))
    with pytest.raises(VLMScorerError, match="answer_template"):
        LikelihoodScorer(vlm, sae, pool, answer_template="a thing")
    with pytest.raises(VLMScorerError, match="at least 1"):
        LikelihoodScorer(vlm, sae, pool, n_random=0)


def test_a_native_resolution_model_is_refused_in_one_line():
    """One prompt of fixed length cannot hold images that each give their own number of tokens."""
    from vis_steer_lens.evaluate.vlm_scorers import LikelihoodScorer, VLMScorerError
    from vis_steer_lens.testing import tiny_sae, tiny_vlm

    qwen = tiny_vlm("qwen2_5_vl", vision_layers=1)
    with pytest.raises(VLMScorerError, match="native-resolution"):
        LikelihoodScorer(qwen, tiny_sae(qwen, "blocks.0.hook_resid_post", d_sae=4), images=[])
