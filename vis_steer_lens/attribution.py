"""Direct feature attribution: which heads and MLPs write an SAE feature into the residual stream.

The residual stream at a hook is a sum of components (TransformerLens'
``ActivationCache.get_full_resid_decomposition``: every attention head's result, every MLP's
output, the embeddings and the biases). An SAE feature's pre-activation is linear in the
residual stream, ``(x - b_dec) @ W_enc[:, f] + b_enc[f]``, so each component's direct
contribution is its dot product with the feature's encoder column, and the contributions plus
the SAE's constant sum to the pre-activation exactly.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from transformer_lens.ActivationCache import ActivationCache

#: The residual-stream hooks an attribution can target, as ``(layer offset, mlp_input)`` into
#: TransformerLens' decomposition of the stream entering a layer.
_RESIDUAL_SITES = {"hook_resid_pre": (0, False), "hook_resid_mid": (0, True), "hook_resid_post": (1, False)}


def feature_attribution(
    cache: ActivationCache,
    sae: Any,
    feature: int,
    *,
    include_prefix_tokens: bool = False,
) -> pd.DataFrame:
    """Each component's direct contribution to one SAE feature's pre-activation.

    Args:
        cache: A HookedViT (or HookedVLM) cache from ``run_with_cache`` holding at least
            ``hook_embed``, ``hook_pos_embed``, every ``attn.hook_z`` and ``hook_mlp_out`` below
            the SAE's hook (caching everything is simplest); on a tower with a pre-norm (CLIP's
            ``ln_pre``) also ``blocks.0.hook_resid_pre``, which is then the ``embed`` row.
        sae: A ``sae_lens.SAE`` at a residual-stream hook (``blocks.L.hook_resid_pre|mid|post``).
        feature: The feature id.
        include_prefix_tokens: Average over prefix tokens (a class token) too; by default over
            the patches only.

    Returns:
        One row per component, largest absolute contribution first: ``component`` (``L3H1``,
        ``2_mlp_out``, ``embed``, ``pos_embed``, ``bias``, ``sae_constant``), ``kind`` (head,
        mlp, embed, bias, constant), ``layer``, ``head``, and ``contribution`` (mean over images
        and tokens) and ``contribution_max`` (the largest single-token value). The rows'
        ``contribution`` sums to the mean pre-activation of the feature.

    Raises:
        ValueError: If the SAE's hook is not a residual-stream hook or the feature is out of range.
    """
    vit = cache.model
    hook = vit.parse_hook_name(sae.cfg.metadata.hook_name)
    if hook.layer is None or hook.site not in _RESIDUAL_SITES:
        raise ValueError(
            f"Direct attribution needs an SAE on the residual stream (blocks.L.hook_resid_pre|mid|post), "
            f"got {hook.name!r}."
        )
    if not 0 <= feature < sae.cfg.d_sae:
        raise ValueError(f"feature must be in 0..{sae.cfg.d_sae - 1}, got {feature}.")
    offset, mlp_input = _RESIDUAL_SITES[hook.site]
    with torch.no_grad():
        stack, labels = cache.get_full_resid_decomposition(
            layer=hook.layer + offset, mlp_input=mlp_input, expand_neurons=False, return_labels=True
        )  # [components, batch, tokens, d_model]
    stack = stack.detach()
    if getattr(vit, "ln_pre", None) is not None:
        # A tower that normalises its embeddings (CLIP's pre-LayerNorm): TransformerLens' embedding
        # terms are before the norm, so the first block's input (``blocks.0.hook_resid_pre``, the
        # normalised embeddings) stands for them, one "embed" row, and the rows still sum exactly.
        keep = [i for i, label in enumerate(labels) if label not in ("embed", "pos_embed")]
        normed = cache["blocks.0.hook_resid_pre"].detach().to(stack)
        stack = torch.cat([normed[None], stack[keep]])
        labels = ["embed", *(labels[i] for i in keep)]
    if not include_prefix_tokens and vit.cfg.n_prefix_tokens:
        stack = stack[:, :, vit.cfg.n_prefix_tokens :]
    encoder = sae.W_enc[:, feature].detach().to(device=stack.device, dtype=torch.float32)
    per_token = stack.float() @ encoder  # [components, batch, tokens]
    constant = float(sae.b_enc[feature].detach().float())
    if getattr(sae.cfg, "apply_b_dec_to_input", True):
        constant -= float(sae.b_dec.detach().float().to(encoder.device) @ encoder)
    rows = [
        {
            "component": label,
            **_describe(label),
            "contribution": float(values.mean()),
            "contribution_max": float(values.max()),
        }
        for label, values in zip(labels, per_token, strict=True)
    ]
    rows.append(
        {
            "component": "sae_constant",
            "kind": "constant",
            "layer": None,
            "head": None,
            "contribution": constant,
            "contribution_max": constant,
        }
    )
    frame = pd.DataFrame(rows)
    order = frame["contribution"].abs().sort_values(ascending=False).index
    return frame.loc[order].reset_index(drop=True)


def _describe(label: str) -> dict[str, Any]:
    """``kind``, ``layer`` and ``head`` of a TransformerLens decomposition label."""
    if label.startswith("L") and "H" in label:
        layer, head = label[1:].split("H")
        return {"kind": "head", "layer": int(layer), "head": int(head)}
    if label.endswith("_mlp_out"):
        return {"kind": "mlp", "layer": int(label.split("_")[0]), "head": None}
    if label in ("embed", "pos_embed"):
        return {"kind": "embed", "layer": None, "head": None}
    return {"kind": "bias", "layer": None, "head": None}


__all__ = ["feature_attribution"]
