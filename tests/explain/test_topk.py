"""Top-k and Steering-informed Top-k on a tiny random VLM, from mined toy-world images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TOY_MINED_HOOK, random_sae

from vis_steer_lens.display import mask_patches
from vis_steer_lens.explain import SteeringInformedTopKExplainer, TopKExplainer
from vis_steer_lens.mining import mine_top_activations
from vis_steer_lens.toy import ToyImages

HOOK = TOY_MINED_HOOK


@pytest.fixture(scope="module")
def setup(toy_mined):
    return toy_mined


def test_topk_rows_show_the_features_top_images(setup):
    vlm, sae, mined = setup
    frame = TopKExplainer(mined, vlm, k_images=3, prompt="toy", max_new_tokens=6).explain(
        range(10), progress=False
    )
    assert frame["feature"].tolist() == list(range(10))
    for feature, image_ids in zip(frame["feature"], frame["image_ids"], strict=True):
        expected = [i for i, score, _ in mined.top_images(feature)[:3] if score > 0]
        assert list(image_ids) == expected
    assert set(frame["method"]) == {"topk"} and frame["coefficient"].isna().all()


def test_topk_batched_equals_single_and_permuted_swaps_images(setup):
    vlm, sae, mined = setup
    features = list(range(6))
    batched = TopKExplainer(mined, vlm, prompt="toy", max_new_tokens=6, batch_size=3).explain(
        features, progress=False
    )
    single = TopKExplainer(mined, vlm, prompt="toy", max_new_tokens=6, batch_size=1).explain(
        features, progress=False
    )
    assert batched["raw_generation"].tolist() == single["raw_generation"].tolist()
    permuted = TopKExplainer(mined, vlm, prompt="toy", max_new_tokens=6, direction="permuted").explain(
        features, progress=False
    )
    own = dict(zip(batched["feature"], batched["image_ids"], strict=True))
    live = set(mined.live_features())
    # A feature that never fired gets a "dead" row under every direction (so paired comparisons
    # share their features); a live one shows the images of the feature half the list away.
    for feature, shown, flag in zip(
        permuted["feature"], permuted["image_ids"], permuted["flag"], strict=True
    ):
        if feature in live:
            assert list(shown) == list(own[[3, 4, 5, 0, 1, 2][feature]])
        else:
            assert flag == "dead" and list(shown) == []
    assert live & set(features) and set(features) - live  # both cases occur


def test_heatmap_display_changes_the_prompt_images(setup):
    vlm, sae, mined = setup
    masked = TopKExplainer(mined, vlm, prompt="toy", max_new_tokens=6)
    heat = TopKExplainer(mined, vlm, prompt="toy", max_new_tokens=6, display="heatmap")
    partial = [e for f in range(10) for e in mined.top_images(f) if e[1] > 0 and (e[2] <= 0).any()]
    image_id, _, amap = partial[0]  # an image where the feature is active on some patches only
    a = np.asarray(masked._shown_image(mined.image(image_id), amap))
    b = np.asarray(heat._shown_image(mined.image(image_id), amap))
    assert not np.array_equal(a, b)
    assert (a == 128).all(axis=-1).any()  # masked patches are the reserved gray
    with pytest.raises(ValueError, match="display"):
        TopKExplainer(mined, vlm, display="sketch")


def test_hybrid_steers_only_active_patches_and_controls_keep_the_images(setup):
    vlm, sae, mined = setup
    features = list(range(6))
    kwargs = dict(sae=sae, prompt="toy", max_new_tokens=6)
    plain = TopKExplainer(mined, vlm, prompt="toy", max_new_tokens=6).explain(features, progress=False)
    zero = SteeringInformedTopKExplainer(mined, vlm, coefficient=0.0, **kwargs).explain(
        features, progress=False
    )
    hybrid = SteeringInformedTopKExplainer(mined, vlm, coefficient=8.0, **kwargs).explain(
        features, progress=False
    )
    random_dir = SteeringInformedTopKExplainer(
        mined, vlm, coefficient=8.0, direction="random_norm_matched", **kwargs
    ).explain(features, progress=False)
    assert zero["raw_generation"].tolist() == plain["raw_generation"].tolist()  # no steering = Top-k
    assert hybrid["raw_generation"].tolist() != plain["raw_generation"].tolist()
    assert [list(x) for x in random_dir["image_ids"]] == [list(x) for x in hybrid["image_ids"]]
    assert set(hybrid["method"]) == {"hybrid"} and (hybrid["coefficient"] == 8.0).all()
    assert hybrid["image_ids"].map(len).eq(0).any()  # features that never fired get a row too


def test_hybrid_delta_lands_on_active_patches_only(setup):
    vlm, sae, mined = setup
    explainer = SteeringInformedTopKExplainer(mined, vlm, sae=sae, coefficient=5.0, prompt="toy")
    tops = [explainer._top(0)]
    ((name, add),) = explainer._steering_hook([0], [0], tops)
    acts = torch.randn(len(tops[0]), 16, 32)
    delta = add(acts.clone(), None) - acts
    active = torch.stack([amap.flatten() > 0 for _, _, amap in tops[0]])
    assert name == HOOK
    assert (delta[~active].abs() == 0).all() and (delta[active].abs().sum(-1) > 0).all()


def test_mask_patches_aligns_with_the_patch_grid():
    image = np.full((64, 64, 3), 200, dtype=np.uint8)
    keep = np.zeros((4, 4), dtype=bool)
    keep[1, 2] = True
    out = np.asarray(mask_patches(image, keep, patch_size=16))
    assert (out[16:32, 32:48] == 200).all()
    assert (out[:16] == 128).all() and (out[:, :32] == 128).all()


def _generate_reference(explainer, features: list[int]) -> list[str]:
    """The same prompts answered by Hugging Face ``generate`` (the steering hooks act on the images)."""
    tops = [explainer._top(f) for f in features]
    images = [[explainer._shown_image(explainer.mined.image(i), amap) for i, _, amap in top] for top in tops]
    inputs = explainer.model.prompt_inputs(images, explainer.prompt.topk(explainer.display))
    prompt_length = inputs["input_ids"].shape[1]
    with torch.no_grad(), explainer.model.hooks(fwd_hooks=explainer._steering_hook(features, features, tops)):
        tokens = explainer.model.generate(
            **inputs,
            max_new_tokens=explainer.max_new_tokens,
            stopping_criteria=explainer._stopping_criteria(prompt_length),
            pad_token_id=explainer._tokenizer.pad_token_id,
        )
    return [explainer._tokenizer.decode(row[prompt_length:], skip_special_tokens=True) for row in tokens]


@pytest.mark.parametrize("method", ["topk", "hybrid"])
def test_row_retiring_decode_answers_as_generate_does(setup, method):
    vlm, sae, mined = setup
    features = [f for f in range(10) if mined.top_images(f) and mined.top_images(f)[0][1] > 0][:5]
    kwargs = dict(prompt="toy", max_new_tokens=10, batch_size=len(features))
    explainer = (
        TopKExplainer(mined, vlm, **kwargs)
        if method == "topk"
        else SteeringInformedTopKExplainer(mined, vlm, sae=sae, coefficient=8.0, **kwargs)
    )
    answers = explainer.explain(features, progress=False)["raw_generation"].tolist()
    assert len(features) >= 3
    assert answers == _generate_reference(explainer, features)


def test_row_retiring_decode_answers_as_generate_does_on_the_shipped_toy_model():
    # The tiny random model runs every row to max_new_tokens; the trained one ends rows early,
    # at different steps, so here rows really leave the batch.
    from vis_steer_lens import toy

    bundle = toy.load()
    mined = mine_top_activations(bundle.vlm, bundle.sae, ToyImages(seed=5, n=300), k=3, progress=False)
    fired = mined.stats.sort_values("frac_images", ascending=False)["feature"].astype(int).tolist()[:8]
    explainer = SteeringInformedTopKExplainer(
        mined, bundle.vlm, sae=bundle.sae, coefficient=1.0, prompt="toy", max_new_tokens=24, batch_size=8
    )
    answers = explainer.explain(fired, progress=False)["raw_generation"].tolist()
    assert len({len(a.split()) for a in answers}) > 1, answers  # rows ended at different steps
    assert answers == _generate_reference(explainer, fired)


def test_the_sae_must_be_the_one_that_was_mined(setup):
    from vis_steer_lens.saes import SAEModelMismatchError

    vlm, sae, mined = setup
    other = random_sae(d_in=32, d_sae=10, hook_name=HOOK, k=2, seed=9)  # same shape, other weights
    with pytest.raises(SAEModelMismatchError, match="mined top images are of SAE"):
        SteeringInformedTopKExplainer(mined, vlm, sae=other, prompt="toy")
    with pytest.raises(SAEModelMismatchError):
        TopKExplainer(mined, vlm, sae=other, prompt="toy")
