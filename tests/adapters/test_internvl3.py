"""InternVL3 through its adapter: HookedViT and HookedVLM equal transformers' InternVLForConditionalGeneration."""

from __future__ import annotations

import pytest
import torch
from conftest import PINNED_BLOCK_HOOKS

from vis_steer_lens import HookedViT, HookedVLM, equivalent_names
from vis_steer_lens.testing import tiny_hf_vlm

ATOL = 1e-5
VARIANTS = [
    pytest.param(("layer_norm", False), id="layernorm"),
    pytest.param(("rms_norm", False), id="rmsnorm"),
    pytest.param(("rms_norm", True), id="rmsnorm-qknorm"),
]


@pytest.fixture(scope="module", params=VARIANTS)
def internvl(request):
    norm_type, qk_norm = request.param
    model, processor = tiny_hf_vlm("internvl3", norm_type=norm_type, qk_norm=qk_norm, seed=3)
    return model, processor, HookedVLM.from_hf(model, processor=processor)


@pytest.fixture
def pixels():
    torch.manual_seed(1)
    return torch.randn(3, 3, 32, 32)


def test_the_tiny_model_is_away_from_its_init(internvl):
    model, _, vlm = internvl
    layer = model.model.vision_tower.encoder.layer[0]
    assert not torch.allclose(layer.lambda_1, layer.lambda_1[0].expand_as(layer.lambda_1))
    assert not torch.allclose(layer.layernorm_before.weight, torch.ones_like(layer.layernorm_before.weight))
    assert model.model.vision_tower.embeddings.cls_token.abs().sum() > 0
    assert vlm.vision.cfg.layer_scale and vlm.vision.cfg.n_prefix_tokens == 1


def test_every_resid_post_equals_hf_hidden_states(internvl, pixels):
    model, _, vlm = internvl
    with torch.no_grad():
        hf = model.model.vision_tower(pixel_values=pixels, output_hidden_states=True)
        out, cache = vlm.vision.run_with_cache(pixels)
    n_layers = vlm.vision.cfg.n_layers
    assert len(hf.hidden_states) == n_layers + 1
    assert (cache["blocks.0.hook_resid_pre"] - hf.hidden_states[0]).abs().max() <= ATOL
    for layer in range(n_layers):
        assert (cache["resid_post", layer] - hf.hidden_states[layer + 1]).abs().max() <= ATOL
    assert (out - hf.last_hidden_state).abs().max() <= ATOL
    # The class token leads the residual stream.
    assert cache["blocks.0.hook_resid_pre"].shape[1] == 1 + vlm.vision.cfg.n_patches


def test_fused_and_hooked_paths_agree(internvl, pixels):
    """Reading every hook runs the unfused norms and eager attention; the output must not move."""
    _, _, vlm = internvl
    with torch.no_grad():
        fused = vlm.vision(pixels)
        hooked = vlm.vision.run_with_hooks(pixels, fwd_hooks=[(lambda name: True, lambda act, hook: act)])
    assert (fused - hooked).abs().max() <= ATOL


def test_logits_and_generate_equal_hf(internvl):
    from PIL import Image

    model, _, vlm = internvl
    images = [Image.new("RGB", (40, 30), (200, 30, 30)), Image.new("RGB", (30, 30), (20, 90, 200))]
    inputs = vlm.prompt_inputs(images, "What is in the image?")
    with torch.no_grad():
        ours = vlm(**inputs)
        theirs = model(**inputs).logits
    assert (ours - theirs).abs().max() <= ATOL
    seen = []
    with vlm.hooks(fwd_hooks=[("blocks.1.hook_resid_post", lambda act, hook: seen.append(1))]):
        tokens = vlm.generate(**inputs, max_new_tokens=6)
    reference = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert torch.equal(tokens, reference)
    assert seen == [1]  # the tower ran once, on the prompt


def test_an_edit_at_every_vision_hook_reaches_the_logits(internvl):
    from PIL import Image

    _, _, vlm = internvl
    inputs = vlm.prompt_inputs([Image.new("RGB", (32, 32), (120, 40, 200))], "What is in the image?")
    with torch.no_grad():
        clean = vlm(**inputs)
        for name in vlm.vision.hook_names():
            torch.manual_seed(0)
            edit = [(name, lambda act, hook: act + 2 * torch.randn_like(act))]
            edited = vlm.run_with_hooks(**inputs, fwd_hooks=edit)
            # Without a path to the logits the output would be bitwise the same.
            assert (edited - clean).abs().max() > 1e-6, f"an edit at {name} did not reach the logits"


def test_hook_names_are_pinned(internvl):
    _, _, vlm = internvl
    block = PINNED_BLOCK_HOOKS
    expected = ["hook_embed", "hook_pos_embed"] + [f"blocks.{i}.{h}" for i in range(2) for h in block]
    # use_mean_pooling: InternViT has no final norm, so there is no ln_final.
    assert vlm.vision.hook_names() == expected
    assert list(vlm.hook_dict) == expected + ["projector.hook_in", "projector.hook_out"]


def test_internvl_names_translate_and_have_no_bridge_names(internvl):
    _, _, vlm = internvl
    vit = vlm.vision
    assert vit.resolve_hook_name("model.vision_tower.encoder.layer.1") == "blocks.1.hook_resid_post"
    assert vit.resolve_hook_name("encoder.layer.0.mlp.fc1") == "blocks.0.mlp.hook_pre"
    triple = equivalent_names("blocks.16.hook_resid_post", family="internvl3")
    assert triple.hf_module == "model.vision_tower.encoder.layer.16"
    assert triple.transformer_bridge is None
    # Gemma's names are not InternVL's.
    from vis_steer_lens import UnknownHookNameError

    with pytest.raises(UnknownHookNameError):
        vit.resolve_hook_name("model.vision_tower.encoder.layers.1")


def test_from_pretrained_loads_only_vision_weights(tmp_path, pixels):
    from transformers import InternVLForConditionalGeneration

    model, processor = tiny_hf_vlm("internvl3", norm_type="rms_norm", seed=5)
    model.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    vit = HookedViT.from_pretrained(str(tmp_path))
    reference = InternVLForConditionalGeneration.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        expected = reference.model.vision_tower(pixel_values=pixels).last_hidden_state
        assert (vit(pixels) - expected).abs().max() <= ATOL
    assert sum(p.numel() for p in vit.parameters()) == sum(
        p.numel() for p in reference.model.vision_tower.parameters()
    )
    assert vit.cfg.family == "internvl3"
    vlm = HookedVLM.from_pretrained(str(tmp_path), load_processor=False)
    assert vlm.adapter.name == "internvl3"


def test_config_round_trips(internvl):
    from vis_steer_lens import HookedViTConfig

    cfg = internvl[2].vision.cfg
    assert HookedViTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="Unknown HookedViTConfig fields"):
        HookedViTConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_prompts_give_each_image_one_tile_even_when_the_processor_would_tile():
    from PIL import Image

    from vis_steer_lens.testing import tiny_vlm

    vlm = tiny_vlm("internvl3", seed=0)
    vlm.processor.image_processor.crop_to_patches = True  # as the released processor is
    wide = Image.new("RGB", (96, 32), "red")  # three tiles wide at 32 px
    inputs = vlm.prompt_inputs([wide, wide], "What is in the image?")
    assert inputs["pixel_values"].shape[0] == 2  # one tile per image, no thumbnails
    assert int((inputs["input_ids"] == vlm.image_token_id).sum()) == 2 * 4
