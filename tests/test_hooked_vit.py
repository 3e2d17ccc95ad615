"""HookedViT against the Hugging Face SigLIP tower it wraps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import PINNED_BLOCK_HOOKS, build_tiny_gemma3

from vis_steer_lens import HookedViT, UnknownHookNameError
from vis_steer_lens.adapters import UnsupportedModelError

ATOL = 1e-5


@pytest.fixture
def vit(tiny_model):
    return HookedViT.from_hf(tiny_model.model.vision_tower)


def hf_out(model, pixels):
    return model.model.vision_tower(pixel_values=pixels).last_hidden_state


def test_hook_names_are_pinned(vit):
    block = PINNED_BLOCK_HOOKS
    expected = ["hook_embed", "hook_pos_embed"]
    expected += [f"blocks.0.{h}" for h in block] + [f"blocks.1.{h}" for h in block]
    expected += ["ln_final.hook_scale", "ln_final.hook_normalized"]
    assert list(vit.hook_dict) == expected
    assert vit.hook_names() == expected


def test_weights_are_shared_not_copied(tiny_model, vit):
    hf_params = {p.data_ptr() for p in tiny_model.model.vision_tower.parameters()}
    ours = {p.data_ptr() for p in vit.parameters()}
    assert ours == hf_params
    with torch.no_grad():
        tiny_model.model.vision_tower.encoder.layers[0].mlp.fc1.bias += 1.0
    assert torch.equal(
        vit.blocks[0].mlp.fc1.bias, tiny_model.model.vision_tower.encoder.layers[0].mlp.fc1.bias
    )


def test_output_equals_hf(tiny_model, vit, pixels):
    with torch.no_grad():
        assert (vit(pixels) - hf_out(tiny_model, pixels)).abs().max() <= ATOL


@pytest.mark.parametrize("returns_value", [False, True], ids=["hook-returns-none", "hook-returns-tensor"])
def test_output_equals_hf_with_noop_hook_everywhere(tiny_model, vit, pixels, returns_value):
    seen = []

    def noop(act, hook):
        seen.append(hook.name)
        return act if returns_value else None

    with torch.no_grad():
        out = vit.run_with_hooks(pixels, fwd_hooks=[(lambda name: True, noop)])
    assert (out - hf_out(tiny_model, pixels)).abs().max() <= ATOL
    assert seen == vit.hook_names()  # every hook fired once, in firing order


def test_cache_matches_hf_hidden_states(tiny_model, vit, pixels):
    with torch.no_grad():
        hf = tiny_model.model.vision_tower(pixel_values=pixels, output_hidden_states=True)
        out, cache = vit.run_with_cache(pixels)
    # hidden_states[0] is the embedding output, hidden_states[i + 1] the output of layer i.
    assert (cache["blocks.0.hook_resid_pre"] - hf.hidden_states[0]).abs().max() <= ATOL
    for layer in range(vit.cfg.n_layers):
        assert (cache["resid_post", layer] - hf.hidden_states[layer + 1]).abs().max() <= ATOL
    assert torch.equal(cache["resid_post", -1], cache["blocks.1.hook_resid_post"])
    assert torch.equal(cache["blocks.0.hook_resid_post"], cache["blocks.1.hook_resid_pre"])


def test_cache_shapes_and_semantics(vit, pixels):
    batch, cfg = pixels.shape[0], vit.cfg
    with torch.no_grad():
        _, cache = vit.run_with_cache(pixels)
    for name in ("hook_q", "hook_k", "hook_v", "hook_z"):
        assert cache[f"blocks.0.attn.{name}"].shape == (batch, cfg.n_patches, cfg.n_heads, cfg.d_head)
    pattern = cache["pattern", 0]
    assert pattern.shape == (batch, cfg.n_heads, cfg.n_patches, cfg.n_patches)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(batch, cfg.n_heads, cfg.n_patches))
    assert cache["blocks.0.mlp.hook_pre"].shape == (batch, cfg.n_patches, cfg.d_mlp)
    # TransformerLens semantics: normalized is (x - mean) / scale, before weight and bias.
    normalized = cache["blocks.0.ln1.hook_normalized"]
    torch.testing.assert_close(normalized.mean(-1), torch.zeros(batch, cfg.n_patches), atol=1e-5, rtol=0)
    resid = cache["blocks.0.hook_resid_pre"]
    centered = resid - resid.mean(-1, keepdim=True)
    torch.testing.assert_close(centered / cache["blocks.0.ln1.hook_scale"], normalized)
    # z is the pattern applied to v, head by head.
    v = cache["blocks.0.attn.hook_v"].transpose(1, 2)
    torch.testing.assert_close(
        (pattern @ v).transpose(1, 2), cache["blocks.0.attn.hook_z"], atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(
        cache["blocks.0.hook_resid_mid"], cache["blocks.0.hook_resid_pre"] + cache["blocks.0.hook_attn_out"]
    )


@pytest.mark.parametrize("hook", ["hook_resid_pre", "hook_resid_mid", "hook_resid_post"])
def test_patching_a_residual_hook_carries_the_whole_downstream(vit, pixels, hook):
    """Every residual hook is a bottleneck: patching it from another input reproduces that input's output."""
    other = torch.randn_like(pixels)
    name = f"blocks.1.{hook}"
    with torch.no_grad():
        other_out, other_cache = vit.run_with_cache(other, names_filter=name)
        patched = vit.run_with_hooks(pixels, fwd_hooks=[(name, lambda act, hook: other_cache[name])])
    assert (patched - other_out).abs().max() <= ATOL


def test_edit_at_resid_mid_reaches_rest_of_block(tiny_model, vit, pixels):
    layer = tiny_model.model.vision_tower.encoder.layers[1]
    with torch.no_grad():
        _, cache = vit.run_with_cache(pixels, names_filter="blocks.1.hook_resid_mid")
        edited = cache["blocks.1.hook_resid_mid"] + 3.0 * torch.randn_like(cache["blocks.1.hook_resid_mid"])
        out = vit.run_with_hooks(pixels, fwd_hooks=[("blocks.1.hook_resid_mid", lambda act, hook: edited)])
        expected = edited + layer.mlp(layer.layer_norm2(edited))
        expected = tiny_model.model.vision_tower.post_layernorm(expected)
    assert (out - expected).abs().max() <= ATOL


def test_edit_at_pattern_is_used(tiny_model, vit, pixels):
    """A uniform attention pattern makes each head's z the mean of its values."""
    with torch.no_grad():
        _, cache = vit.run_with_cache(pixels, names_filter="blocks.1.attn.hook_v")

        def uniform(pattern, hook):
            return torch.full_like(pattern, 1.0 / pattern.shape[-1])

        z_seen = {}
        vit.run_with_hooks(
            pixels,
            fwd_hooks=[
                ("blocks.1.attn.hook_pattern", uniform),
                ("blocks.1.attn.hook_z", lambda z, hook: z_seen.setdefault("z", z.clone())),
            ],
        )
    v = cache["blocks.1.attn.hook_v"]
    expected = v.mean(dim=1, keepdim=True).expand_as(v)
    torch.testing.assert_close(z_seen["z"], expected, atol=1e-5, rtol=1e-5)


def test_every_hook_edit_changes_the_output(vit, pixels):
    with torch.no_grad():
        clean = vit(pixels)
        for name in vit.hook_names():
            # A random edit: a uniform shift or scale of the last block would be undone by ln_final.
            torch.manual_seed(0)
            out = vit.run_with_hooks(pixels, fwd_hooks=[(name, lambda act, hook: act + torch.rand_like(act))])
            assert (out - clean).abs().max() > 1e-4, f"an edit at {name} did not reach the output"


def test_sdpa_unless_pattern_is_read(vit, pixels, monkeypatch):
    calls = []
    real_sdpa = F.scaled_dot_product_attention

    def counting_sdpa(*args, **kwargs):
        calls.append(1)
        return real_sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting_sdpa)
    with torch.no_grad():
        vit(pixels)
        assert len(calls) == vit.cfg.n_layers
        calls.clear()
        vit.run_with_cache(pixels, names_filter=lambda name: "resid" in name)
        assert len(calls) == vit.cfg.n_layers
        calls.clear()
        vit.run_with_cache(pixels, names_filter="blocks.0.attn.hook_pattern")
        assert len(calls) == vit.cfg.n_layers - 1


def test_stop_and_start_at_layer_split_the_tower(vit, pixels):
    with torch.no_grad():
        full, cache = vit.run_with_cache(pixels)  # caching the pattern runs eager attention: not bitwise
        mid = vit(pixels, stop_at_layer=1)
        assert (mid - cache["resid_post", 0]).abs().max() <= ATOL
        resumed = vit(mid, start_at_layer=1)
        assert (resumed - full).abs().max() <= ATOL
        assert torch.equal(vit(pixels, stop_at_layer=-1), mid)
    with pytest.raises(ValueError, match="out of range"):
        vit(pixels, stop_at_layer=5)
    with pytest.raises(ValueError, match="residual stream"):
        vit(pixels, start_at_layer=1)


def test_batch_equals_one_at_a_time(vit, pixels):
    with torch.no_grad():
        batched = vit(pixels)
        singles = torch.cat([vit(pixels[i : i + 1]) for i in range(pixels.shape[0])])
    assert (batched - singles).abs().max() <= ATOL


def test_bfloat16(pixels):
    model = build_tiny_gemma3().to(torch.bfloat16)
    vit = HookedViT.from_hf(model.model.vision_tower)
    with torch.no_grad():
        ours = vit(pixels)
        ref = hf_out(model, pixels)
        cached, _ = vit.run_with_cache(pixels)
    assert ours.dtype == torch.bfloat16
    assert (ours.float() - ref.float()).abs().max() <= 2e-2
    assert (cached.float() - ref.float()).abs().max() <= 5e-2


def test_hooks_removed_after_exception(vit, pixels):
    with pytest.raises(RuntimeError, match="boom"):
        with vit.hooks(fwd_hooks=[("blocks.0.hook_resid_post", lambda a, hook: a)]):
            raise RuntimeError("boom")

    def failing(act, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        vit.run_with_hooks(pixels, fwd_hooks=[("blocks.1.hook_mlp_out", failing)])
    assert not any(hp.fwd_hooks or hp._forward_hooks for hp in vit.hook_dict.values())


def test_add_hook_and_reset_hooks(vit, pixels):
    with torch.no_grad():
        clean = vit(pixels)
        shift = torch.randn(vit.cfg.d_model)  # not uniform: LayerNorm would undo a uniform shift
        vit.add_hook("blocks.0.hook_resid_post", lambda act, hook: act + shift)
        assert (vit(pixels) - clean).abs().max() > 1e-3
        vit.reset_hooks()
        assert torch.equal(vit(pixels), clean)


def test_other_naming_conventions_are_accepted(vit, pixels):
    with torch.no_grad():
        _, by_bridge = vit.run_with_cache(pixels, names_filter=["vision_encoder.encoder_layers.1.hook_out"])
        _, by_hf = vit.run_with_cache(pixels, names_filter="model.vision_tower.encoder.layers.1")
        _, ours = vit.run_with_cache(pixels, names_filter="blocks.1.hook_resid_post")
    assert list(by_bridge.keys()) == list(by_hf.keys()) == ["blocks.1.hook_resid_post"]
    assert torch.equal(by_bridge["blocks.1.hook_resid_post"], ours["blocks.1.hook_resid_post"])


def test_unknown_hook_name_suggests_close_names(vit, pixels):
    with pytest.raises(UnknownHookNameError, match="blocks.1.hook_resid_post"):
        vit.run_with_hooks(pixels, fwd_hooks=[("blocks.1.hook_resid_pots", lambda a, hook: a)])
    with pytest.raises(UnknownHookNameError, match="2-layer tower"):
        vit.add_hook("blocks.7.hook_resid_post", lambda a, hook: a)


def test_bad_pixel_values_are_rejected(vit):
    with pytest.raises(ValueError, match=r"\[batch, 3, height, width\]"):
        vit(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="32x32"):
        vit(torch.randn(1, 3, 48, 48))


def test_hook_width(vit):
    assert vit.hook_width("blocks.1.hook_resid_post") == 32
    assert vit.hook_width("vision_encoder.encoder_layers.0.mlp.in.hook_out") == 64


def test_from_pretrained_loads_only_vision_weights(tiny_checkpoint, pixels):
    from transformers import Gemma3ForConditionalGeneration

    vit = HookedViT.from_pretrained(tiny_checkpoint)
    reference = Gemma3ForConditionalGeneration.from_pretrained(tiny_checkpoint).eval()
    with torch.no_grad():
        assert (vit(pixels) - hf_out(reference, pixels)).abs().max() <= ATOL
    n_vision = sum(p.numel() for p in reference.model.vision_tower.parameters())
    assert sum(p.numel() for p in vit.parameters()) == n_vision
    assert vit.cfg.model_name == tiny_checkpoint
    half = HookedViT.from_pretrained(tiny_checkpoint, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16


def test_unsupported_models_fail_clearly(tmp_path):
    from transformers import LlamaConfig, SiglipTextConfig, SiglipTextModel

    LlamaConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    ).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match="gemma3"):
        HookedViT.from_pretrained(str(tmp_path))
    text_tower = SiglipTextModel(
        SiglipTextConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    )
    with pytest.raises(UnsupportedModelError, match="siglip_text_model.*siglip_vision_model"):
        HookedViT.from_hf(text_tower)


@pytest.mark.parametrize(
    "groups",
    [
        [0] * 5 + [1] * 5 + [2] * 5,  # copies of one image back to back
        [0] * 3 + [1] * 7 + [2] * 2 + [3] * 7,  # images or windows of several sizes
        [0, 1, 0, 1, 2, 2, 0],  # not contiguous: the mask
    ],
)
def test_grouped_attention_equals_the_masked_attention(groups):
    """Attending group by group (no [tokens, tokens] mask) gives masked attention's result."""
    from vis_steer_lens.hooked_vit import AttentionGroups

    group = torch.tensor(groups)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, len(groups), 4, generator=gen) for _ in range(3))
    attention = AttentionGroups(group)
    assert attention.contiguous == (groups != [0, 1, 0, 1, 2, 2, 0])
    expected = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=attention.mask(), scale=0.5
    )
    torch.testing.assert_close(attention.attend(q, k, v, 0.5), expected, atol=1e-6, rtol=1e-6)
