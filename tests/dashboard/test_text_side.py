"""The text side of a feature: its direction's soft-token change read through the unembedding."""

from __future__ import annotations

import pytest
import torch

from vis_steer_lens.dashboard.text_side import text_side_tokens


def test_text_side_is_the_steered_soft_tokens_through_the_unembedding(toy_mined):
    vlm, sae, _ = toy_mined
    coefficient = 3.0
    tokens = text_side_tokens(vlm, sae, [2, 5], coefficient=coefficient, n=4)
    assert set(tokens) == {2, 5} and all(len(t) == 4 for t in tokens.values())
    # Independently: the empty image's soft tokens with the decoder row added at the hook, minus without.
    from vis_steer_lens.explain.steering import SteeringExplainer

    pixels = SteeringExplainer(vlm, sae, coefficient=1.0)._pixels
    hook = sae.cfg.metadata.hook_name
    with torch.no_grad():
        base = vlm.encode_images(pixels).float()
        for feature in (2, 5):
            row = sae.W_dec[feature].detach()

            def add(act, hook, row=row):
                return act + coefficient * row.to(act.dtype)

            with vlm.hooks(fwd_hooks=[(hook, add)]):
                steered = vlm.encode_images(pixels).float()
            logits = (steered - base).mean(dim=1)[0] @ vlm.hf_model.get_output_embeddings().weight.float().T
            values, ids = logits.topk(4)
            names = vlm.processor.tokenizer.convert_ids_to_tokens(ids.tolist())
            assert [t for t, _ in tokens[feature]] == names
            assert [v for _, v in tokens[feature]] == pytest.approx(values.tolist(), rel=1e-3, abs=1e-4)
    assert text_side_tokens(vlm, sae, []) == {}
