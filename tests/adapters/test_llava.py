"""LLaVA-1.5 through its adapter: HookedViT and HookedVLM equal transformers' LlavaForConditionalGeneration,
and the layers after the one the language model reads are stated and refused for steering."""

from __future__ import annotations

import pytest
import torch
from conftest import PINNED_BLOCK_HOOKS
from PIL import Image

from vis_steer_lens import HookedViT, HookedVLM
from vis_steer_lens.testing import tiny_hf_vlm

ATOL = 1e-5
N_LAYERS = 3  # the language model reads layer 1 (vision_feature_layer=-2); layer 2 never reaches it


@pytest.fixture(scope="module")
def llava():
    model, processor = tiny_hf_vlm("llava", vision_layers=N_LAYERS, seed=3)
    return model, processor, HookedVLM.from_hf(model, processor=processor)


@pytest.fixture(scope="module")
def inputs(llava):
    images = [Image.new("RGB", (40, 30), (200, 30, 30)), Image.new("RGB", (30, 30), (20, 90, 200))]
    return llava[2].prompt_inputs(images, "What is in the image?")


def test_the_tiny_model_is_llava_with_clip_away_from_its_init(llava):
    model, _, vlm = llava
    tower = model.model.vision_tower
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert type(tower).__name__ == "CLIPVisionModel"
    assert not torch.allclose(tower.pre_layrnorm.weight, torch.ones_like(tower.pre_layrnorm.weight))
    assert vlm.vision.cfg.family == "llava" and vlm.adapter.name == "llava"
    cfg = vlm.vision.cfg
    assert (cfg.n_prefix_tokens, cfg.embed_norm_type, cfg.final_norm_type, cfg.act_fn) == (
        1,
        "LN",
        None,
        "quick_gelu",
    )


def test_every_resid_post_equals_hf_hidden_states():
    model, _ = tiny_hf_vlm("llava", vision_layers=N_LAYERS, seed=3)
    vit = HookedViT.from_hf(model.model.vision_tower)  # a bare CLIP tower gets the llava adapter
    assert vit.cfg.family == "llava"
    torch.manual_seed(1)
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        hf = model.model.vision_tower(pixel_values=pixels, output_hidden_states=True)
        out, cache = vit.run_with_cache(pixels)
    assert len(hf.hidden_states) == N_LAYERS + 1
    # hidden_states[0] is after CLIP's pre-LayerNorm: ln_pre runs before the first block.
    assert (cache["blocks.0.hook_resid_pre"] - hf.hidden_states[0]).abs().max() <= ATOL
    assert (cache["ln_pre.hook_normalized"] - hf.hidden_states[0]).abs().max() > 1e-3  # before its weight
    for layer in range(N_LAYERS):
        assert (cache["resid_post", layer] - hf.hidden_states[layer + 1]).abs().max() <= ATOL
    assert (out - hf.last_hidden_state).abs().max() <= ATOL


def test_fused_and_hooked_paths_agree(llava):
    torch.manual_seed(2)
    pixels = torch.randn(2, 3, 32, 32)
    vit = llava[2].vision
    with torch.no_grad():
        fused = vit(pixels)
        hooked = vit.run_with_hooks(pixels, fwd_hooks=[(lambda name: True, lambda act, hook: act)])
    assert (fused - hooked).abs().max() <= ATOL


def test_soft_tokens_logits_and_generate_equal_hf(llava, inputs):
    model, _, vlm = llava
    with torch.no_grad():
        theirs_features = model.model.get_image_features(
            inputs["pixel_values"],
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
        ).pooler_output
        ours_features = vlm.encode_images(inputs["pixel_values"])
        assert ours_features.shape == (2, 16, model.config.text_config.hidden_size)  # class token dropped
        assert (ours_features - torch.stack(theirs_features)).abs().max() <= ATOL
        ours = vlm(**inputs)
        theirs = model(**inputs).logits
    assert (ours - theirs).abs().max() <= ATOL
    seen = []
    with vlm.hooks(fwd_hooks=[("blocks.1.hook_resid_post", lambda act, hook: seen.append(1))]):
        tokens = vlm.generate(**inputs, max_new_tokens=6)
    reference = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert torch.equal(tokens, reference)
    assert seen == [1]
    from vis_steer_lens.explain.decoding import greedy_decode

    language, tower = vlm.split_inputs(inputs)
    decoded = greedy_decode(
        vlm,
        language,
        image_features=vlm.encode_images(**tower),
        max_new_tokens=6,
        eos_token_ids=vlm.end_of_answer_ids(),
        pad_token_id=vlm.tokenizer.pad_token_id,
    )
    assert torch.equal(decoded, reference)  # steering's own decoding loop, as generate


def test_edits_reach_the_logits_exactly_up_to_the_feature_layer(llava, inputs):
    _, _, vlm = llava
    assert vlm.feature_layer == N_LAYERS - 2
    assert not vlm.reads_prefix_tokens
    with torch.no_grad():
        clean = vlm(**inputs)
        for name in vlm.vision.hook_names():
            torch.manual_seed(0)
            edit = [(name, lambda act, hook: act + 2 * torch.randn_like(act))]
            edited = vlm.run_with_hooks(**inputs, fwd_hooks=edit)
            moved = float((edited - clean).abs().max())
            if vlm.reaches_language_model(name):
                assert moved > 1e-6, f"an edit at {name} did not reach the logits"
            else:
                assert name.startswith(f"blocks.{N_LAYERS - 1}.")
                assert moved == 0, f"an edit at {name} (after the feature layer) changed the logits"


def test_hook_names_are_pinned(llava):
    vit = llava[2].vision
    pre = ["hook_embed", "hook_pos_embed", "ln_pre.hook_scale", "ln_pre.hook_normalized"]
    expected = pre + [f"blocks.{i}.{h}" for i in range(N_LAYERS) for h in PINNED_BLOCK_HOOKS]
    assert vit.hook_names() == expected  # CLIP's post_layernorm pools the class token only: no ln_final
    assert vit.resolve_hook_name("model.vision_tower.encoder.layers.1") == "blocks.1.hook_resid_post"
    assert vit.resolve_hook_name("encoder.layers.0.mlp.fc1") == "blocks.0.mlp.hook_pre"
    from vis_steer_lens import equivalent_names

    triple = equivalent_names("blocks.22.hook_resid_post", family="llava")  # no model needed
    assert triple.hf_module == "model.vision_tower.encoder.layers.22" and triple.transformer_bridge is None


def test_from_pretrained_loads_the_tower_and_the_model(tmp_path):
    from transformers import LlavaForConditionalGeneration

    model, processor = tiny_hf_vlm("llava", vision_layers=2, seed=5)
    model.save_pretrained(tmp_path, max_shard_size="100KB")
    processor.save_pretrained(tmp_path)
    vit = HookedViT.from_pretrained(str(tmp_path))
    reference = LlavaForConditionalGeneration.from_pretrained(tmp_path).eval()
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = reference.model.vision_tower(pixel_values=pixels).last_hidden_state
        assert (vit(pixels) - expected).abs().max() <= ATOL
    assert vit.cfg.family == "llava"
    vlm = HookedVLM.from_pretrained(str(tmp_path))
    assert vlm.adapter.name == "llava" and vlm.processor is not None
    assert vlm.generate_text([Image.new("RGB", (32, 32), "red")], "What is in the image?", max_new_tokens=3)


def test_random_llava_has_the_released_shapes():
    from vis_steer_lens.testing import random_hf_vlm

    model, processor = random_hf_vlm("llava-1.5-7b", n_vision_layers=1, n_text_layers=1, vocab_size=256)
    vision, text = model.config.vision_config, model.config.text_config
    assert (vision.hidden_size, vision.intermediate_size, vision.num_attention_heads) == (1024, 4096, 16)
    assert (vision.image_size, vision.patch_size, vision.hidden_act) == (336, 14, "quick_gelu")
    assert (text.hidden_size, text.intermediate_size, text.num_attention_heads) == (4096, 11008, 32)
    assert model.config.vision_feature_layer == -2
    image = processor(images=[Image.new("RGB", (500, 400), "red")], text=["<image>hi"], return_tensors="pt")
    assert image["pixel_values"].shape[-2:] == (336, 336)
    assert int((image["input_ids"] == model.config.image_token_index).sum()) == 576


def test_steering_the_hybrid_and_auto_refuse_a_hook_after_the_feature_layer_but_reading_works(llava):
    from vis_steer_lens import (
        SteeringExplainer,
        SteeringInformedTopKExplainer,
        TopKExplainer,
        UnreachableHookError,
        mine_top_activations,
    )
    from vis_steer_lens.testing import tiny_sae

    _, _, vlm = llava
    late = tiny_sae(vlm, f"blocks.{N_LAYERS - 1}.hook_resid_post", d_sae=8)
    for coefficient in (20.0, "auto"):
        with pytest.raises(UnreachableHookError, match=r"reads \(blocks\.1\.hook_resid_post\)") as error:
            SteeringExplainer(vlm, late, coefficient=coefficient)
        assert isinstance(error.value, ValueError) and "\n" not in str(error.value)
    gen = torch.Generator().manual_seed(0)
    images = [Image.fromarray((torch.rand(32, 32, 3, generator=gen) * 255).byte().numpy()) for _ in range(6)]
    mined = mine_top_activations(vlm, late, images, k=2, batch_size=3)  # reading after it is fine
    assert mined.top_images(0)
    topk = TopKExplainer(mined, vlm, max_new_tokens=2)
    assert len(topk.explain([0, 1])) == 2
    with pytest.raises(UnreachableHookError, match="hybrid"):
        SteeringInformedTopKExplainer(mined, vlm, sae=late)
    # At the feature layer itself steering is accepted.
    SteeringExplainer(vlm, tiny_sae(vlm, "blocks.1.hook_resid_post", d_sae=8), coefficient=20.0)
