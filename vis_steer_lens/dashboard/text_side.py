"""The text side of a vision feature: which tokens its direction pushes the language model towards.

The vision analogue of a logit table. The feature's decoder row is added at the SAE's hook, at
a coefficient, on the empty image (exactly as :class:`~vis_steer_lens.SteeringExplainer` steers),
and the soft image tokens that come out of the projector are compared with the unsteered ones;
their mean change is read through the language model's unembedding. The tokens with the largest
logits are the feature's text side. It is a logit lens on the soft tokens: the language model's
layers are left out, so it shows what the direction writes into the language model's input, not
what the model answers (the steered answers show that).
"""

from __future__ import annotations

from typing import Any

import torch

#: Tokens listed per feature.
N_TOKENS = 10


@torch.no_grad()
def text_side_tokens(
    vlm: Any,
    sae: Any,
    features: list[int],
    *,
    coefficient: float | None = None,
    empty_image: str = "white",
    n: int = N_TOKENS,
    batch_size: int = 32,
) -> dict[int, list[list]]:
    """Each feature's top tokens through the projector and the unembedding.

    Args:
        vlm: The subject :class:`~vis_steer_lens.HookedVLM`.
        sae: The SAE whose decoder rows are read.
        features: Features to read.
        coefficient: Scale of the added decoder row (the run's coefficient); ``None``: the hook's
            mean patch norm on the empty image (a multiple of 1).
        empty_image: The empty image steered.
        n: Tokens per feature.
        batch_size: Features steered per forward pass.

    Returns:
        ``feature -> [[token text, logit], ...]``, largest logit first (logits to 4 digits).
    """
    from vis_steer_lens.explain.steering import SteeringExplainer

    if not features:
        return {}
    explainer = SteeringExplainer(vlm, sae, coefficient=1.0, empty_image=empty_image, max_new_tokens=1)
    scale = float(coefficient) if coefficient is not None else explainer.patch_norm()
    unembed = vlm.hf_model.get_output_embeddings().weight  # [vocab, d_lm]
    tokenizer = vlm.tokenizer
    zero = torch.zeros(1, sae.W_dec.shape[1])
    base = explainer.steered_image_features(zero, [0.0]).float()  # [1, soft tokens, d_lm]
    out: dict[int, list[list]] = {}
    for start in range(0, len(features), batch_size):
        chunk = features[start : start + batch_size]
        directions = sae.W_dec[chunk].detach().float().cpu()
        steered = explainer.steered_image_features(directions, [scale] * len(chunk)).float()
        change = (steered - base).mean(dim=1)  # [chunk, d_lm]
        logits = change.to(unembed.device, unembed.dtype) @ unembed.T
        values, indices = logits.float().topk(min(n, logits.shape[-1]), dim=-1)
        for feature, vals, ids in zip(chunk, values.tolist(), indices.tolist(), strict=True):
            texts = tokenizer.convert_ids_to_tokens(ids) if tokenizer is not None else [str(i) for i in ids]
            out[int(feature)] = [[str(t), float(f"{v:.4g}")] for t, v in zip(texts, vals, strict=True)]
    return out


__all__ = ["N_TOKENS", "text_side_tokens"]
