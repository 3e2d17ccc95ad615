"""Steering on a native-resolution family (Qwen2.5-VL): the batch's empty images are packed into one
sequence, each row steered by its own feature, with the same answers as one generate per feature."""

from __future__ import annotations

import pytest
import torch

from vis_steer_lens import SteeringExplainer
from vis_steer_lens.testing import tiny_sae, tiny_vlm


@pytest.fixture(scope="module")
def vlm():
    return tiny_vlm("qwen2_5_vl", vision_layers=4, seed=2)


def _reference(vlm, sae, feature, coefficient, max_new_tokens, prompt):
    """One feature, the paper's way: the full tower with the direction added at the hook, then generate."""
    image = vlm.adapter.empty_image("white", vlm.processor)
    inputs = vlm.prompt_inputs([image], prompt)
    direction = coefficient * sae.W_dec[feature].detach()

    def add(act, hook):
        return act + direction.reshape(act.shape[-2:]) if act.ndim == 4 else act + direction

    tokenizer = vlm.processor.tokenizer
    with vlm.hooks(fwd_hooks=[(sae.cfg.metadata.hook_name, add)]):
        tokens = vlm.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
            pad_token_id=tokenizer.pad_token_id,
        )
    return tokenizer.decode(tokens[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


@pytest.mark.parametrize("hook", ["blocks.1.hook_resid_post", "blocks.2.mlp.hook_post"])
@pytest.mark.parametrize("reuse_prefix", [True, False])
def test_packed_steering_equals_one_generate_per_feature(vlm, hook, reuse_prefix):
    sae = tiny_sae(vlm, hook, d_sae=16)
    explainer = SteeringExplainer(
        vlm,
        sae,
        coefficient=20.0,
        batch_size=3,
        max_new_tokens=6,
        reuse_prefix=reuse_prefix,
        stop_at_sentence_end=False,
    )
    # The prompt is built from the empty image itself: its grid fixes the soft-token count.
    h, w = explainer.geometry.grid(0)
    n_image_tokens = int((explainer._inputs["input_ids"] == vlm.image_token_id).sum())
    assert n_image_tokens == h * w // 4 and explainer.geometry.packed
    features = [0, 1, 2, 3]
    table = explainer.explain(features)
    answers = table.set_index("feature")["raw_generation"]
    with torch.no_grad():
        for feature in features:
            expected = _reference(vlm, sae, feature, 20.0, 6, explainer.prompt.steering)
            assert answers[feature] == expected, feature
    assert len(set(answers)) > 1  # the features steer differently


def test_steering_no_patch_is_the_unsteered_answer(vlm):
    sae = tiny_sae(vlm, "blocks.1.hook_resid_post", d_sae=16)
    probe = SteeringExplainer(vlm, sae, coefficient=20.0, max_new_tokens=6, stop_at_sentence_end=False)
    h, w = probe.geometry.grid(0)
    nowhere = SteeringExplainer(
        vlm,
        sae,
        coefficient=20.0,
        max_new_tokens=6,
        stop_at_sentence_end=False,
        positions=torch.zeros(h, w, dtype=torch.bool),
    )
    unsteered = SteeringExplainer(vlm, sae, coefficient=0.0, max_new_tokens=6, stop_at_sentence_end=False)
    assert (
        nowhere.explain([0, 1])["raw_generation"].tolist()
        == unsteered.explain([0, 1])["raw_generation"].tolist()
    )
    with pytest.raises(ValueError, match=f"{h * w} entries"):
        SteeringExplainer(vlm, sae, coefficient=1.0, positions=torch.ones(3, dtype=torch.bool))


def test_a_region_in_image_coordinates_means_the_same_on_every_grid():
    """positions=(left, top, right, bottom) picks the patches whose centres lie in that part of the
    image, on a fixed grid and on a native-resolution empty image alike."""
    from vis_steer_lens import SteeringExplainer
    from vis_steer_lens.testing import tiny_sae, tiny_vlm

    for family in ("gemma3", "qwen2_5_vl"):
        vlm = tiny_vlm(family, vision_layers=2)
        sae = tiny_sae(vlm, "blocks.0.hook_resid_post", d_sae=8)
        left = SteeringExplainer(vlm, sae, coefficient=5.0, positions=(0.0, 0.0, 0.5, 1.0))
        h, w = left.geometry.grid(0)
        expected = torch.zeros(h, w, dtype=torch.bool)
        expected[:, : w // 2] = True
        # The mask is over the tower's positions (Qwen2.5-VL holds them in window order): map it back.
        assert torch.equal(left.geometry.patch_map(left._positions, 0), expected)
        with pytest.raises(ValueError, match="fractions of the image"):
            SteeringExplainer(vlm, sae, coefficient=5.0, positions=(0.6, 0.0, 0.5, 1.0))
