"""Qwen2-VL and Qwen2.5-VL through their adapters: HookedViT and HookedVLM equal transformers on packed
batches of images of different sizes (Qwen2.5-VL: window attention with full-attention blocks)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vis_steer_lens import HookedVLM
from vis_steer_lens.testing import tiny_hf_vlm

ATOL = 1e-5
FAMILIES = ["qwen2_vl", "qwen2_5_vl"]
# Two non-square images of different sizes: grids 4 x 6 and 8 x 4 patches of 8 px.
IMAGE_SIZES = [(48, 32), (32, 64)]


@pytest.fixture(scope="module", params=FAMILIES)
def qwen(request):
    model, processor = tiny_hf_vlm(request.param, vision_layers=4, seed=3)
    return model, processor, HookedVLM.from_hf(model, processor=processor)


@pytest.fixture(scope="module")
def inputs(qwen):
    _, _, vlm = qwen
    images = [Image.new("RGB", size, (40 * i + 60, 200 - 50 * i, 90)) for i, size in enumerate(IMAGE_SIZES)]
    inputs = vlm.prompt_inputs(images, "What is in the image?")
    torch.manual_seed(1)  # pixels away from flat colours, so every patch differs
    inputs["pixel_values"] = inputs["pixel_values"] + 0.5 * torch.randn_like(inputs["pixel_values"])
    return inputs


def _tower(model):
    return model.model.visual


def test_the_tiny_model_is_away_from_its_init(qwen):
    model, _, vlm = qwen
    block = _tower(model).blocks[0]
    assert not torch.allclose(block.norm1.weight, torch.ones_like(block.norm1.weight))
    cfg = vlm.vision.cfg
    assert cfg.packed and cfg.fused_qkv and cfg.positional == "rotary_2d"
    if vlm.adapter.name == "qwen2_5_vl":
        assert cfg.norm_type == "RMS" and cfg.gated_mlp and cfg.full_attention_blocks == [1, 3]
    else:
        assert cfg.norm_type == "LN" and not cfg.gated_mlp and cfg.full_attention_blocks is None


def test_the_geometry_of_two_images_of_different_sizes(qwen, inputs):
    _, _, vlm = qwen
    geometry = vlm.image_geometry(inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"])
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 6], [1, 8, 4]]
    assert geometry.grid_hw.tolist() == [[4, 6], [8, 4]]
    assert geometry.span.tolist() == [[0, 24], [24, 56]]
    assert geometry.packed and geometry.n_soft_tokens.tolist() == [6, 8]
    assert not bool(geometry.is_prefix.any())
    # Every (row, col) of each grid exactly once.
    for image in range(2):
        sl = geometry.image_positions(image)
        h, w = geometry.grid(image)
        cells = sorted(zip(geometry.row[sl].tolist(), geometry.col[sl].tolist(), strict=True))
        assert cells == [(r, c) for r in range(h) for c in range(w)]
    # The processor's patches come in merge blocks (2 x 2 neighbours consecutive); the tower
    # moves whole blocks, never splits one.
    blocks = geometry.order.reshape(-1, 4)
    assert torch.equal(blocks - blocks[:, :1], torch.arange(4).expand_as(blocks))
    assert geometry.row[:4].tolist() == [0, 0, 1, 1] and geometry.col[:4].tolist() == [0, 1, 0, 1]
    if vlm.adapter.name == "qwen2_5_vl":
        # 32-px windows: 4 x 4 patches; the 4 x 6 image has two windows (4 x 4 and 4 x 2), the
        # 8 x 4 one two (4 x 4 each), so the tower holds its tokens in a permuted order.
        assert geometry.window is not None and geometry.window.unique().numel() == 4
        assert not torch.equal(geometry.order, torch.arange(56))
    else:
        assert geometry.window is None and torch.equal(geometry.order, torch.arange(56))


def test_every_resid_post_equals_hf_hidden_states(qwen, inputs):
    model, _, vlm = qwen
    pixels, grid = inputs["pixel_values"], inputs["image_grid_thw"]
    with torch.no_grad():
        hf = _tower(model)(pixels, grid_thw=grid, output_hidden_states=True)
        out, cache = vlm.vision.run_with_cache(pixels, image_grid_thw=grid)
    n_layers = vlm.vision.cfg.n_layers
    assert len(hf.hidden_states) == n_layers + 1
    # Packed: one sequence [1, tokens, d] in the tower's (window) order, as transformers holds it.
    assert cache["blocks.0.hook_resid_pre"].shape == (1, 56, vlm.vision.cfg.d_model)
    assert (cache["blocks.0.hook_resid_pre"][0] - hf.hidden_states[0]).abs().max() <= ATOL
    for layer in range(n_layers):
        assert (cache["resid_post", layer][0] - hf.hidden_states[layer + 1]).abs().max() <= ATOL
    assert (out[0] - hf.last_hidden_state).abs().max() <= ATOL


def test_fused_and_hooked_paths_agree(qwen, inputs):
    """Reading every hook runs the unfused norms and eager masked attention; the output must not move."""
    _, _, vlm = qwen
    pixels, grid = inputs["pixel_values"], inputs["image_grid_thw"]
    with torch.no_grad():
        fused = vlm.vision(pixels, image_grid_thw=grid)
        hooked = vlm.vision.run_with_hooks(
            pixels, image_grid_thw=grid, fwd_hooks=[(lambda name: True, lambda act, hook: act)]
        )
    assert (fused - hooked).abs().max() <= ATOL


def test_attention_stays_within_each_image_and_window(qwen, inputs):
    _, _, vlm = qwen
    pixels, grid = inputs["pixel_values"], inputs["image_grid_thw"]
    geometry = vlm.image_geometry(pixels, image_grid_thw=grid)
    with torch.no_grad():
        _, cache = vlm.vision.run_with_cache(
            pixels, image_grid_thw=grid, names_filter=lambda n: "pattern" in n
        )
    same_image = geometry.image_index[:, None] == geometry.image_index[None, :]
    for layer, block in enumerate(vlm.vision.blocks):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0]
        allowed = same_image
        if block.windowed:
            allowed = geometry.window[:, None] == geometry.window[None, :]
        assert bool((pattern[:, ~allowed] == 0).all())
        assert torch.allclose(pattern.sum(-1), torch.ones_like(pattern.sum(-1)))


def test_tl_weight_views_give_the_hooked_queries_and_mlp(qwen, inputs):
    _, _, vlm = qwen
    pixels, grid = inputs["pixel_values"], inputs["image_grid_thw"]
    with torch.no_grad():
        _, cache = vlm.vision.run_with_cache(pixels, image_grid_thw=grid)
        block = vlm.vision.blocks[1]
        x = cache["blocks.1.ln1.hook_normalized"] * block.ln1.w
        if block.ln1.b is not None:
            x = x + block.ln1.b
        for name, weight, bias in (
            ("q", block.attn.W_Q, block.attn.b_Q),
            ("v", block.attn.W_V, block.attn.b_V),
        ):
            expected = torch.einsum("bpd,hdk->bphk", x, weight) + bias
            assert (cache[f"blocks.1.attn.hook_{name}"] - expected).abs().max() <= ATOL
        if vlm.vision.cfg.gated_mlp:
            y = cache["blocks.1.ln2.hook_normalized"] * block.ln2.w
            assert (
                cache["blocks.1.mlp.hook_pre"] - (y @ block.mlp.W_gate + block.mlp.b_gate)
            ).abs().max() <= ATOL
            assert (
                cache["blocks.1.mlp.hook_pre_linear"] - (y @ block.mlp.W_in + block.mlp.b_in)
            ).abs().max() <= ATOL


def test_soft_tokens_logits_and_generate_equal_hf(qwen, inputs):
    model, _, vlm = qwen
    with torch.no_grad():
        soft = vlm.encode_images(inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"])
        reference = model.model.get_image_features(
            inputs["pixel_values"], inputs["image_grid_thw"]
        ).pooler_output
        assert soft.shape == (1, 14, model.config.text_config.hidden_size)
        assert (soft[0] - torch.cat(reference)).abs().max() <= ATOL
        ours = vlm(**inputs)
        theirs = model(**inputs).logits
    assert (ours - theirs).abs().max() <= ATOL
    seen = []
    with vlm.hooks(fwd_hooks=[("blocks.1.hook_resid_post", lambda act, hook: seen.append(1))]):
        tokens = vlm.generate(**inputs, max_new_tokens=6)
    reference = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert torch.equal(tokens, reference)
    assert seen == [1]  # the tower ran once, on the prompt


def test_an_edit_at_every_vision_hook_reaches_the_logits(qwen, inputs):
    _, _, vlm = qwen
    with torch.no_grad():
        clean = vlm(**inputs)
        for name in vlm.vision.hook_names():
            torch.manual_seed(0)
            edit = [(name, lambda act, hook: act + 2 * torch.randn_like(act))]
            edited = vlm.run_with_hooks(**inputs, fwd_hooks=edit)
            assert (edited - clean).abs().max() > 1e-6, f"an edit at {name} did not reach the logits"


def test_hook_names(qwen):
    _, _, vlm = qwen
    names = vlm.vision.hook_names()
    assert names[0] == "hook_embed" and "hook_pos_embed" not in names  # rotary: no added positions
    block = [n[len("blocks.0.") :] for n in names if n.startswith("blocks.0.")]
    assert block.index("attn.hook_v") < block.index("attn.hook_rot_q") < block.index("attn.hook_rot_k")
    assert block.index("attn.hook_rot_k") < block.index("attn.hook_attn_scores")
    assert ("mlp.hook_pre_linear" in block) == (vlm.adapter.name == "qwen2_5_vl")
    assert block[-1] == "hook_resid_post"
    assert not any(n.startswith("ln_final") for n in names)  # the merger's norm belongs to the projector
    assert vlm.vision.resolve_hook_name("model.visual.blocks.2") == "blocks.2.hook_resid_post"
    assert vlm.adapter.default_hook_names(4) == names


def test_start_at_layer_resumes_with_the_geometry(qwen, inputs):
    _, _, vlm = qwen
    pixels, grid = inputs["pixel_values"], inputs["image_grid_thw"]
    geometry = vlm.image_geometry(pixels, image_grid_thw=grid)
    with torch.no_grad():
        full = vlm.vision(pixels, image_grid_thw=grid)
        resid = vlm.vision(pixels, image_grid_thw=grid, stop_at_layer=2)
        resumed = vlm.vision(resid, start_at_layer=2, geometry=geometry)
        with pytest.raises(ValueError, match="geometry"):
            vlm.vision(resid, start_at_layer=2)
    assert (full - resumed).abs().max() <= ATOL


def test_a_patch_map_has_each_images_own_grid(qwen, inputs):
    _, _, vlm = qwen
    pixels, grid = inputs["pixel_values"], inputs["image_grid_thw"]
    geometry = vlm.image_geometry(pixels, image_grid_thw=grid)
    with torch.no_grad():
        _, cache = vlm.vision.run_with_cache(
            pixels, image_grid_thw=grid, names_filter="blocks.3.hook_resid_post"
        )
    norms = cache["blocks.3.hook_resid_post"][0].norm(dim=-1)  # one value per position
    maps = [geometry.patch_map(norms, image) for image in range(2)]
    assert [tuple(m.shape) for m in maps] == [(4, 6), (8, 4)]
    # Position p holds the patch at (row[p], col[p]).
    p = 30
    image = int(geometry.image_index[p])
    assert maps[image][geometry.row[p], geometry.col[p]] == norms[p]


def test_greedy_decode_equals_generate_with_mrope_positions(qwen, inputs):
    """Our decoding loop (the explainers') gives generate's tokens: M-RoPE positions, left padding."""
    from vis_steer_lens.explain.decoding import greedy_decode

    model, processor, vlm = qwen
    assert bool((inputs["attention_mask"] == 0).any())  # different soft-token counts pad the shorter row
    eos = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad = processor.tokenizer.pad_token_id
    with torch.no_grad():
        features = vlm.encode_images(inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"])
        ours = greedy_decode(
            vlm,
            {k: v for k, v in inputs.items() if k != "pixel_values"},
            features,
            max_new_tokens=8,
            eos_token_ids=eos,
            pad_token_id=pad,
        )
        reference = model.generate(
            **inputs, max_new_tokens=8, do_sample=False, eos_token_id=eos, pad_token_id=pad
        )
    assert torch.equal(ours, reference)


def test_the_prefill_positions_are_mrope_and_matter(qwen, inputs):
    model, _, vlm = qwen
    mask = inputs["attention_mask"]
    text_positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    positions, offset = vlm.adapter.decoding_positions(model, inputs, text_positions, mask)
    assert positions.shape == (4, *mask.shape) and offset.shape == (2,)
    # Image tokens share temporal positions and count rows and columns: offsets are negative.
    assert bool((offset < 0).all())
    with torch.no_grad():
        reference = model(**inputs).logits
        ours = model(**inputs, position_ids=positions).logits
        text_only = model(**inputs, position_ids=text_positions).logits
    assert (ours - reference).abs().max() <= ATOL
    assert (text_only - reference).abs().max() > 1e-4  # so the decoding test would see wrong positions


def test_random_released_qwen25_vl_3b_equals_hf():
    """The released 3B architecture (its vision width, window size and M-RoPE sections), depth and
    vocabulary cut: every block and the logits equal transformers on two images of different sizes."""
    from vis_steer_lens.testing import random_vlm

    vlm = random_vlm("qwen2.5-vl-3b", n_vision_layers=2, n_text_layers=1, vocab_size=4096)
    model = vlm.hf_model
    vision = model.config.vision_config
    assert (vision.hidden_size, vision.intermediate_size, vision.window_size) == (1280, 3420, 112)
    assert model.config.text_config.hidden_size == 2048 and vlm.vision.cfg.d_head == 80
    images = [Image.new("RGB", (100, 60), (200, 30, 30)), Image.new("RGB", (60, 130), (20, 90, 200))]
    inputs = vlm.prompt_inputs(images, "What is in the image?")
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 8], [1, 10, 4]]  # 28-px multiples, own aspect
    with torch.no_grad():
        hf = _tower(model)(
            inputs["pixel_values"], grid_thw=inputs["image_grid_thw"], output_hidden_states=True
        )
        _, cache = vlm.vision.run_with_cache(inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"])
        for layer in range(2):
            assert (cache["resid_post", layer][0] - hf.hidden_states[layer + 1]).abs().max() <= ATOL
        assert (vlm(**inputs) - model(**inputs).logits).abs().max() <= ATOL


def test_sae_splicing_and_feature_attribution_on_the_packed_layout(qwen, inputs):
    from vis_steer_lens import feature_attribution
    from vis_steer_lens.testing import tiny_sae

    _, _, vlm = qwen
    sae = tiny_sae(vlm, "blocks.2.hook_resid_post", d_sae=16)
    pixels, grid = inputs["pixel_values"], inputs["image_grid_thw"]
    with torch.no_grad():
        clean, cache = vlm.vision.run_with_cache(pixels, image_grid_thw=grid)
        with vlm.saes([sae], use_error_term=True):
            spliced, spliced_cache = vlm.vision.run_with_cache(pixels, image_grid_thw=grid)
    assert spliced_cache["blocks.2.hook_resid_post.hook_sae_acts_post"].shape == (1, 56, 16)
    assert (spliced - clean).abs().max() <= ATOL  # the error term keeps the output
    table = feature_attribution(cache, sae, 3)
    resid = cache["blocks.2.hook_resid_post"][0]
    pre = ((resid - sae.b_dec) @ sae.W_enc[:, 3] + sae.b_enc[3]).mean()
    assert table["contribution"].sum() == pytest.approx(float(pre), abs=1e-4)
    assert "pos_embed" not in set(table["component"])  # rotary: no additive positions


@pytest.mark.parametrize("family", FAMILIES)
def test_from_pretrained_loads_the_tower_and_the_processor(family, tmp_path):
    from vis_steer_lens import HookedViT

    model, processor = tiny_hf_vlm(family, vision_layers=2, seed=5)
    model.save_pretrained(tmp_path, max_shard_size="100KB")
    processor.save_pretrained(tmp_path)
    vit = HookedViT.from_pretrained(str(tmp_path))
    vlm = HookedVLM.from_pretrained(str(tmp_path))
    assert vit.cfg.family == family and vlm.adapter.name == family
    images = [Image.new("RGB", size, (30, 120, 200)) for size in IMAGE_SIZES]
    inputs = vlm.prompt_inputs(images, "What is in the image?")  # the saved processor works offline
    pixels, grid = inputs["pixel_values"], inputs["image_grid_thw"]
    with torch.no_grad():
        expected = _tower(model)(pixels, grid_thw=grid).last_hidden_state
        assert (vit(pixels, image_grid_thw=grid)[0] - expected).abs().max() <= ATOL
        assert (vlm(**inputs) - model(**inputs).logits).abs().max() <= ATOL
