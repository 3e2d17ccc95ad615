"""Vision-only towers (CLIP, SigLIP, DINOv2, DINOv2 with registers): HookedViT equals transformers,
prefix tokens are marked, checkpoints load, and what needs a language model is refused."""

from __future__ import annotations

import pytest
import torch

from vis_steer_lens import HookedViT, HookedVLM
from vis_steer_lens.families import NoLanguageModelError, adapter_for, adapter_for_tower
from vis_steer_lens.testing import TINY_TOWER_FAMILIES, random_hf_tower, tiny_hf_tower, tiny_vit


def _max_resid_error(tower, vit, pixel_values) -> float:
    """Largest difference between every residual stream of ``vit`` and transformers' hidden states."""
    with torch.no_grad():
        reference = tower(pixel_values=pixel_values, output_hidden_states=True)
        out, cache = vit.run_with_cache(pixel_values)
    hidden = reference.hidden_states
    errors = [(cache["blocks.0.hook_resid_pre"] - hidden[0]).abs().max()]
    errors += [
        (cache[f"blocks.{i}.hook_resid_post"] - hidden[i + 1]).abs().max() for i in range(vit.cfg.n_layers)
    ]
    errors.append((out - reference.last_hidden_state).abs().max())
    return float(max(errors))


@pytest.mark.parametrize("family", TINY_TOWER_FAMILIES)
def test_tiny_tower_equals_transformers(family):
    tower, _ = tiny_hf_tower(family, layers=3, seed=1)
    vit = HookedViT.from_hf(tower, family=family)
    assert vit.cfg.family == family
    pixel_values = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert _max_resid_error(tower, vit, pixel_values) <= 1e-5


@pytest.mark.parametrize(
    ("name", "image_size"),
    [
        ("dinov2-with-registers-base", 224),  # 518-px positions interpolated to 16 x 16 patches
        ("dinov2-base", 224),
        ("clip-vit-large-patch14", 224),
        ("siglip2-base-patch16-224", 224),
    ],
)
def test_released_tower_equals_transformers(name, image_size):
    tower, _ = random_hf_tower(name, n_layers=2)
    vit = HookedViT.from_hf(tower, family=adapter_for(tower.config).name)
    pixel_values = torch.randn(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    assert _max_resid_error(tower, vit, pixel_values) <= 1e-5


def test_registers_are_prefix_tokens_without_positions():
    vit = tiny_vit("dinov2_with_registers")  # 2 registers
    assert (vit.cfg.n_prefix_tokens, vit.cfg.n_register_tokens) == (3, 2)
    pixel_values = torch.randn(2, 3, 32, 32)
    geometry = vit.image_geometry(pixel_values)
    assert geometry.is_prefix.view(2, -1)[:, :3].all() and not geometry.is_prefix.view(2, -1)[:, 3:].any()
    _, cache = vit.run_with_cache(pixel_values, names_filter=["hook_pos_embed", "hook_embed"])
    pos = cache["hook_pos_embed"]
    assert pos.shape == (2, 3 + 16, 32)
    assert (pos[:, 1:3] == 0).all() and (pos[:, 0] != 0).any() and (pos[:, 3:] != 0).all()
    embed = cache["hook_embed"][0]
    assert torch.equal(embed[1:3], vit.register_tokens.reshape(2, -1))


def test_dinov2_takes_any_size_and_hf_names():
    tower, _ = tiny_hf_tower("dinov2", layers=2)
    vit = HookedViT.from_hf(tower)  # a bare Dinov2Model is claimed by its own adapter
    assert vit.cfg.family == "dinov2"
    pixel_values = torch.randn(1, 3, 48, 40)  # 6 x 5 patches, positions interpolated as transformers does
    assert _max_resid_error(tower, vit, pixel_values) <= 1e-5
    assert vit.resolve_hook_name("encoder.layer.1") == "blocks.1.hook_resid_post"
    assert vit.resolve_hook_name("encoder.layer.0.layer_scale2") == "blocks.0.hook_mlp_out"


def test_bare_clip_and_siglip_keep_the_vlm_families_unless_named():
    clip, _ = tiny_hf_tower("clip")
    siglip, _ = tiny_hf_tower("siglip")
    assert adapter_for_tower(clip).name == "llava" and adapter_for_tower(siglip).name == "gemma3"
    assert (
        HookedViT.from_hf(clip, family="clip").resolve_hook_name("encoder.layers.1")
        == "blocks.1.hook_resid_post"
    )
    assert HookedViT.from_hf(siglip, family="siglip").cfg.family == "siglip"


def test_from_pretrained_reads_tower_and_two_tower_checkpoints(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    tower, _ = tiny_hf_tower("dinov2_with_registers", layers=2)
    tower.save_pretrained(tmp_path / "dino")
    loaded = HookedViT.from_pretrained(str(tmp_path / "dino"))
    assert loaded.cfg.family == "dinov2_with_registers"
    assert loaded.tower_fingerprint() == HookedViT.from_hf(tower).tower_fingerprint()

    clip_tower, _ = tiny_hf_tower("clip", layers=2)
    text = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, vocab_size=50
    )
    both = CLIPModel(
        CLIPConfig(text_config=text, vision_config=clip_tower.config.to_dict(), projection_dim=16)
    )
    both.vision_model.load_state_dict(clip_tower.state_dict())
    both.save_pretrained(tmp_path / "clip")
    loaded = HookedViT.from_pretrained(str(tmp_path / "clip"))  # only the vision weights are read
    assert loaded.cfg.family == "clip"
    pixel_values = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(pixel_values), clip_tower(pixel_values=pixel_values).last_hidden_state)


def test_a_tower_is_not_a_vlm(tmp_path):
    tower, _ = tiny_hf_tower("dinov2", layers=1)
    with pytest.raises(NoLanguageModelError, match="no language model"):
        HookedVLM.from_hf(tower)
    tower.save_pretrained(tmp_path)
    with pytest.raises(NoLanguageModelError, match=r"HookedViT\.from_pretrained"):
        HookedVLM.from_pretrained(str(tmp_path))
