"""The three hook naming conventions, and HookedViT against TransformerLens' TransformerBridge."""

from __future__ import annotations

import pytest
import torch

from vis_steer_lens import HookedViT, UnknownHookNameError, canonical_hook_name, equivalent_names
from vis_steer_lens.adapters import get_adapter


def test_every_mapped_name_round_trips():
    for name in get_adapter("gemma3").default_hook_names(3):
        triple = equivalent_names(name, n_layers=3)
        assert triple.hooked_vit == name
        if triple.transformer_bridge is not None:
            assert canonical_hook_name(triple.transformer_bridge, n_layers=3) == name
        if triple.hf_module is not None:
            assert canonical_hook_name(triple.hf_module, n_layers=3) == name


def test_known_equivalences():
    triple = equivalent_names("blocks.16.hook_resid_post")
    assert triple.transformer_bridge == "vision_encoder.encoder_layers.16.hook_out"
    assert triple.hf_module == "model.vision_tower.encoder.layers.16"
    assert canonical_hook_name("vision_encoder.encoder_layers.4.mlp.hook_out") == "blocks.4.hook_mlp_out"
    assert canonical_hook_name("vision_encoder.encoder_layers.4.ln2.hook_in") == "blocks.4.hook_resid_mid"
    assert canonical_hook_name("encoder.layers.2.mlp.fc1") == "blocks.2.mlp.hook_pre"  # a bare tower's path
    assert canonical_hook_name("model.vision_tower.encoder.layers.2.self_attn") == "blocks.2.hook_attn_out"
    # Hooks without a counterpart say so with None.
    assert equivalent_names("blocks.0.hook_resid_mid").hf_module is None


@pytest.mark.parametrize(
    ("bad", "suggestion"),
    [
        ("blocks.3.hook_resid_pots", "blocks.3.hook_resid_post"),
        ("blocks.3.attn.hook_patern", "blocks.3.attn.hook_pattern"),
        ("vision_encoder.encoder_layers.3.hook_outt", "vision_encoder.encoder_layers.3.hook_out"),
    ],
)
def test_unknown_names_list_close_valid_names(bad, suggestion):
    with pytest.raises(UnknownHookNameError) as info:
        canonical_hook_name(bad)
    assert suggestion in str(info.value)


def test_layer_out_of_range():
    with pytest.raises(UnknownHookNameError, match="4-layer tower"):
        canonical_hook_name("blocks.4.hook_resid_post", n_layers=4)


# Hooks where TransformerBridge (transformer-lens 3.9) agrees with Hugging Face. Past the first
# LayerNorm's normalisation it does not: it applies Gemma's RMSNorm "+1" weight offset to SigLIP's
# LayerNorms, so its vision activations from `ln1.hook_out` on are off (2x with unit LN weights).
_AGREEING = ["blocks.0.hook_resid_pre", "blocks.0.ln1.hook_scale", "blocks.0.ln1.hook_normalized"]
_ALL_MAPPED_BLOCK_HOOKS = [
    "blocks.{i}.hook_resid_pre",
    "blocks.{i}.ln1.hook_normalized",
    "blocks.{i}.attn.hook_q",
    "blocks.{i}.attn.hook_pattern",
    "blocks.{i}.hook_attn_out",
    "blocks.{i}.hook_resid_mid",
    "blocks.{i}.mlp.hook_pre",
    "blocks.{i}.hook_mlp_out",
    "blocks.{i}.hook_resid_post",
]


def _bridge_and_ours(tiny_checkpoint):
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import Gemma3ForConditionalGeneration

    hf_model = Gemma3ForConditionalGeneration.from_pretrained(tiny_checkpoint).eval()
    bridge = TransformerBridge.boot_transformers(tiny_checkpoint, hf_model=hf_model, device="cpu")
    vit = HookedViT.from_pretrained(tiny_checkpoint)
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, 32, 32)
    bridge_cache = {}

    def save(act, hook):
        bridge_cache[hook.name] = act.detach().clone()

    with torch.no_grad():
        _, ours = vit.run_with_cache(pixels)
        with bridge.hooks(fwd_hooks=[(lambda name: name.startswith("vision_encoder."), save)]):
            bridge.original_model.model.vision_tower(pixel_values=pixels)
    return ours, bridge_cache


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_cache_equals_transformer_bridge_where_the_bridge_is_right(tiny_checkpoint):
    ours, theirs = _bridge_and_ours(tiny_checkpoint)
    for name in _AGREEING:
        torch.testing.assert_close(
            ours[name], theirs[equivalent_names(name).transformer_bridge], atol=1e-5, rtol=1e-5
        )


@pytest.mark.xfail(
    strict=True,
    reason="transformer-lens 3.9's TransformerBridge adds Gemma's RMSNorm +1 offset to SigLIP LayerNorm weights; "
    "HookedViT matches Hugging Face instead (test_hooked_vit). Passing means the bridge was fixed: make this a plain test.",
)
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_cache_equals_transformer_bridge_everywhere(tiny_checkpoint):
    ours, theirs = _bridge_and_ours(tiny_checkpoint)
    for layer in range(2):
        for name in (n.format(i=layer) for n in _ALL_MAPPED_BLOCK_HOOKS):
            torch.testing.assert_close(
                ours[name], theirs[equivalent_names(name).transformer_bridge], atol=1e-4, rtol=1e-4
            )
