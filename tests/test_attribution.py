"""TransformerLens' ActivationCache analysis on HookedViT, and direct feature attribution, for both families."""

from __future__ import annotations

import pytest
import torch

from vis_steer_lens import feature_attribution
from vis_steer_lens.testing import tiny_sae, tiny_vlm

ATOL = 1e-4


@pytest.fixture(scope="module", params=["gemma3", "internvl3"])
def vit(request):
    return tiny_vlm(request.param, seed=2, vision_layers=3).vision


@pytest.fixture(scope="module")
def cache(vit):
    torch.manual_seed(0)
    with torch.no_grad():
        _, cache = vit.run_with_cache(torch.randn(2, 3, 32, 32))
    return cache


def test_config_has_what_transformer_lens_reads(vit):
    cfg = vit.cfg
    assert cfg.attn_only is False and cfg.normalization_type in ("LN", "RMS") and cfg.device == "cpu"
    assert vit.blocks[0].attn.W_O.shape == (cfg.n_heads, cfg.d_head, cfg.d_model)
    assert vit.blocks[0].attn.W_Q.shape == (cfg.n_heads, cfg.d_model, cfg.d_head)
    assert vit.blocks[0].mlp.W_in.shape == (cfg.d_model, cfg.d_mlp)
    assert vit.blocks[0].mlp.W_out.shape == (cfg.d_mlp, cfg.d_model)
    # Views of the Hugging Face weights: an edit of the HF weight shows through.
    q_proj = vit.blocks[0].attn.q_proj
    with torch.no_grad():
        q_proj.weight[0, 0] += 1.0
        assert vit.blocks[0].attn.W_Q[0, 0, 0] == q_proj.weight[0, 0]
        q_proj.weight[0, 0] -= 1.0


def test_decompose_resid_sums_to_the_last_resid_post(vit, cache):
    n = vit.cfg.n_layers
    stack, labels = cache.decompose_resid(layer=n, return_labels=True)
    assert labels[:2] == ["embed", "pos_embed"] and labels[-1] == f"{n - 1}_mlp_out"
    torch.testing.assert_close(stack.sum(0), cache["resid_post", n - 1], atol=ATOL, rtol=0)
    accumulated = cache.accumulated_resid(layer=n)
    torch.testing.assert_close(accumulated[-1], cache["resid_post", n - 1], atol=ATOL, rtol=0)


def test_head_results_plus_b_O_sum_to_attn_out(vit, cache):
    for layer in range(vit.cfg.n_layers):
        heads = cache.stack_head_results(
            layer=layer + 1, return_labels=False
        )  # [heads of layers <= layer, ...]
        this_layer = heads[-vit.cfg.n_heads :]
        total = this_layer.sum(0) + vit.blocks[layer].attn.b_O
        torch.testing.assert_close(total, cache["attn_out", layer], atol=ATOL, rtol=0)


def test_full_decomposition_sums_to_the_residual_stream(vit, cache):
    n = vit.cfg.n_layers
    for expand in (True, False):
        stack = cache.get_full_resid_decomposition(layer=n, expand_neurons=expand)
        torch.testing.assert_close(stack.sum(0), cache["resid_post", n - 1], atol=ATOL, rtol=0)
    mid = cache.get_full_resid_decomposition(layer=1, mlp_input=True, expand_neurons=False)
    torch.testing.assert_close(mid.sum(0), cache["resid_mid", 1], atol=ATOL, rtol=0)


def test_apply_ln_to_stack_reproduces_the_normalized_stream(vit, cache):
    stack = cache.decompose_resid(layer=1, mlp_input=True)
    normalized = cache.apply_ln_to_stack(stack, layer=1, mlp_input=True).sum(0)
    torch.testing.assert_close(normalized, cache["blocks.1.ln2.hook_normalized"], atol=ATOL, rtol=0)


def test_feature_attribution_sums_to_the_pre_activation(vit, cache):
    sae = tiny_sae(vit, "blocks.2.hook_resid_post", d_sae=16, seed=1)
    table = feature_attribution(cache, sae, feature=3)
    n_prefix = vit.cfg.n_prefix_tokens
    resid = cache["blocks.2.hook_resid_post"][:, n_prefix:]
    pre = (resid - sae.b_dec) @ sae.W_enc[:, 3] + sae.b_enc[3]
    assert table["contribution"].sum() == pytest.approx(float(pre.detach().mean()), abs=ATOL)
    heads = table[table["kind"] == "head"]
    assert len(heads) == vit.cfg.n_layers * vit.cfg.n_heads
    assert set(table[table["kind"] == "mlp"]["layer"]) == {0, 1, 2}
    assert table["contribution"].abs().is_monotonic_decreasing
    with pytest.raises(ValueError, match="residual stream"):
        feature_attribution(cache, tiny_sae(vit, "blocks.1.mlp.hook_post", d_sae=8), feature=0)


def test_feature_attribution_sums_on_a_tower_with_a_pre_norm():
    """CLIP (LLaVA) normalises its embeddings before the first block: the normalised embeddings are the
    'embed' row, so the rows still sum to the pre-activation."""
    vit = tiny_vlm("llava", seed=2, vision_layers=3).vision
    torch.manual_seed(0)
    with torch.no_grad():
        _, cache = vit.run_with_cache(torch.randn(2, 3, 32, 32))
    sae = tiny_sae(vit, "blocks.1.hook_resid_post", d_sae=16, seed=1)
    table = feature_attribution(cache, sae, feature=3)
    resid = cache["blocks.1.hook_resid_post"][:, 1:]
    pre = (resid - sae.b_dec) @ sae.W_enc[:, 3] + sae.b_enc[3]
    assert table["contribution"].sum() == pytest.approx(float(pre.detach().mean()), abs=ATOL)
    assert (table["component"] == "embed").sum() == 1 and "pos_embed" not in set(table["component"])
