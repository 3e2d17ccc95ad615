"""LLaVA-NeXT and LLaVA-OneVision (AnyRes) through their adapters: the tower on every crop, the tiled
geometry, soft tokens, logits and generation equal transformers', for two images of different aspect
ratios (so different tile counts) in one batch."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vis_steer_lens import HookedVLM
from vis_steer_lens.testing import tiny_hf_vlm

ATOL = 1e-5
N_LAYERS = 3
FAMILIES = ("llava_next", "llava_onevision")


@pytest.fixture(scope="module", params=FAMILIES)
def anyres(request):
    model, processor = tiny_hf_vlm(request.param, vision_layers=N_LAYERS, seed=3)
    return model, processor, HookedVLM.from_hf(model, processor=processor)


# A wide image (1 x 2 tiles, padded rows cut) and a square one (2 x 2 tiles).
IMAGES = [Image.new("RGB", (60, 15), (200, 30, 30)), Image.new("RGB", (60, 60), (20, 90, 200))]


@pytest.fixture(scope="module")
def inputs(anyres):
    gen = torch.Generator().manual_seed(0)
    images = [
        Image.fromarray((torch.rand(im.height, im.width, 3, generator=gen) * 255).byte().numpy())
        for im in IMAGES
    ]
    return anyres[2].prompt_inputs(images, "What is in the image?")


def tower_inputs(vlm, inputs):
    return vlm.split_inputs(inputs)[1]


def test_family_and_layout(anyres):
    model, _, vlm = anyres
    family = model.config.model_type
    assert vlm.vision.cfg.family == family and vlm.adapter.name == family
    if family == "llava_next":
        assert type(model.model.vision_tower).__name__ == "CLIPVisionModel"
        assert (vlm.feature_layer, vlm.reads_prefix_tokens) == (N_LAYERS - 2, False)
    else:
        assert type(model.model.vision_tower).__name__ == "SiglipVisionModel"
        assert vlm.feature_layer == N_LAYERS - 1 and vlm.vision.cfg.n_prefix_tokens == 0
        # SigLIP's final norm is after hidden_states[-1], which the language model reads.
        assert not vlm.reaches_language_model("ln_final.hook_normalized")


def test_every_residual_stream_equals_the_hf_tower_on_the_crops(anyres, inputs):
    model, _, vlm = anyres
    tower = tower_inputs(vlm, inputs)
    crops = torch.cat([inputs["pixel_values"][0, :3], inputs["pixel_values"][1, :5]])  # 1 + 2 and 1 + 4 tiles
    with torch.no_grad():
        hf = model.model.vision_tower(pixel_values=crops, output_hidden_states=True)
        pixel_values = tower.pop("pixel_values")
        _, cache = vlm.vision.run_with_cache(pixel_values, **tower)
    assert cache["blocks.0.hook_resid_pre"].shape[0] == 8  # the crops are the batch rows
    assert (cache["blocks.0.hook_resid_pre"] - hf.hidden_states[0]).abs().max() <= ATOL
    for layer in range(N_LAYERS):
        assert (cache["resid_post", layer] - hf.hidden_states[layer + 1]).abs().max() <= ATOL


def test_the_geometry_stitches_tiles_and_tells_the_base_apart(anyres, inputs):
    model, _, vlm = anyres
    geometry = vlm.image_geometry(**tower_inputs(vlm, inputs))  # pixel_values and image_sizes
    g, prefix = 4, vlm.vision.cfg.n_prefix_tokens
    per_crop = prefix + g * g
    assert geometry.crop_tokens == per_crop
    # Stitched: 1 x 2 tiles of 4 x 4 patches, rows 0 and 3 only padding (cut); 2 x 2 tiles, no padding.
    assert geometry.grid_hw.tolist() == [[2, 8], [8, 8]]
    assert geometry.span.tolist() == [[0, 3 * per_crop], [3 * per_crop, 8 * per_crop]]
    for image, n_crops in enumerate((3, 5)):
        base = geometry.base_patch_positions(image)
        assert base.tolist() == list(
            range(geometry.span[image, 0] + prefix, geometry.span[image, 0] + per_crop)
        )
        grid = geometry.patch_positions(image)
        assert len(grid) == int(geometry.grid_hw[image].prod()) and len(set(grid.tolist())) == len(grid)
        padding = (geometry.image_index == image) & (geometry.view == 2)
        assert len(grid) + int(padding.sum()) == (n_crops - 1) * g * g
        assert bool((geometry.view[grid] == 0).all()) and bool((geometry.view[base] == 1).all())
    # Tiles stitched: the wide image's first tile's row 1 is its grid's row 0; the second tile starts at column 4.
    start = int(geometry.span[0, 0])
    tile1, tile2 = start + per_crop + prefix + g, start + 2 * per_crop + prefix + g
    stitched = [
        int(geometry.row[tile1]),
        int(geometry.col[tile1]),
        int(geometry.row[tile2]),
        int(geometry.col[tile2]),
    ]
    assert stitched == [0, 0, 0, 4]
    assert (
        geometry.view[start + per_crop + prefix] == 2 and not geometry.soft_source[start + per_crop + prefix]
    )
    # Every patch of the image's grid feeds the language model, the padding none.
    assert geometry.patch_map(geometry.soft_source.float(), 0).all()
    assert geometry.patch_map(geometry.soft_source.float(), 1).all()
    assert not geometry.soft_source[geometry.view == 2].any()
    n_image_tokens = int((inputs["input_ids"] == model.config.image_token_index).sum())
    assert int(geometry.n_soft_tokens.sum()) == n_image_tokens
    # Other families keep view all zeros.
    from vis_steer_lens.geometry import ImageGeometry

    assert not ImageGeometry.fixed_grid(2, 3, 1).view.any()


def test_soft_tokens_logits_and_generation_equal_hf(anyres, inputs):
    model, _, vlm = anyres
    tower = tower_inputs(vlm, inputs)
    with torch.no_grad():
        extra = {k: v for k, v in tower.items() if k != "pixel_values"}
        theirs = model.model.get_image_features(tower["pixel_values"], **extra).pooler_output
        ours = vlm.encode_images(**tower)
        assert ours.shape[1] == sum(t.shape[0] for t in theirs)
        assert (ours[0] - torch.cat(theirs)).abs().max() <= ATOL
        assert (vlm(**inputs) - model(**inputs).logits).abs().max() <= ATOL
    seen = []
    with vlm.hooks(fwd_hooks=[("blocks.0.hook_resid_post", lambda act, hook: seen.append(act.shape[0]))]):
        tokens = vlm.generate(**inputs, max_new_tokens=6)
    reference = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert torch.equal(tokens, reference) and seen == [8]
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
    assert torch.equal(decoded, reference)


def test_edits_reach_the_logits_exactly_where_the_language_model_reads(anyres, inputs):
    _, _, vlm = anyres
    with torch.no_grad():
        clean = vlm(**inputs)
        for name in vlm.vision.hook_names():
            torch.manual_seed(0)
            edit = [(name, lambda act, hook: act + 2 * torch.randn_like(act))]
            moved = float((vlm.run_with_hooks(**inputs, fwd_hooks=edit) - clean).abs().max())
            if vlm.reaches_language_model(name):
                assert moved > 1e-6, f"an edit at {name} did not reach the logits"
            else:
                assert moved == 0, f"an edit at {name} (after the feature layer) changed the logits"


def test_the_empty_image_is_tiled_and_steerable(anyres):
    from vis_steer_lens import SteeringExplainer
    from vis_steer_lens.testing import tiny_sae

    _, _, vlm = anyres
    empty = vlm.empty_image_inputs("white")
    assert empty["pixel_values"].ndim == 5 and empty["pixel_values"].shape[1] > 1  # base + tiles
    geometry = vlm.image_geometry(**empty)
    soft = vlm.encode_images(**empty)
    assert soft.shape[1] == int(geometry.n_soft_tokens.sum())
    hook = f"blocks.{vlm.feature_layer}.hook_resid_post"
    explainer = SteeringExplainer(vlm, tiny_sae(vlm, hook, d_sae=8), coefficient=20.0, max_new_tokens=3)
    explanations = explainer.explain([0, 1])
    assert len(explanations) == 2


def test_from_pretrained_loads_the_bare_tower_and_the_model(tmp_path):
    from vis_steer_lens import HookedViT

    model, processor = tiny_hf_vlm("llava_next", vision_layers=2, seed=5)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    vit = HookedViT.from_pretrained(str(tmp_path))  # the tower alone: crops are plain 32-px images
    assert vit.cfg.family == "llava_next"
    crops = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.model.vision_tower(pixel_values=crops).last_hidden_state
        assert (vit(crops) - expected).abs().max() <= ATOL
    assert vit.image_geometry(crops).grid_hw.tolist() == [[4, 4]] * 3
    vlm = HookedVLM.from_pretrained(str(tmp_path))
    assert vlm.adapter.name == "llava_next" and vlm.vision.cfg.extra["anyres"]["image_grid_pinpoints"]
    assert vlm.generate_text([Image.new("RGB", (60, 20), "red")], "What is in the image?", max_new_tokens=3)


def test_a_bare_clip_tower_stays_llava_15():
    from vis_steer_lens import HookedViT

    model, _ = tiny_hf_vlm("llava_next", vision_layers=1, seed=0)
    assert HookedViT.from_hf(model.model.vision_tower).cfg.family == "llava"


@pytest.mark.parametrize(
    ("name", "widths"),
    [("llava-onevision-7b", (1152, 4304, 3584, 18944)), ("llava-v1.6-mistral-7b", (1024, 4096, 4096, 14336))],
)
def test_random_releases_have_the_released_shapes(name, widths):
    from vis_steer_lens.testing import random_hf_vlm

    model, processor = random_hf_vlm(name, n_vision_layers=1, n_text_layers=1, vocab_size=256)
    vision, text = model.config.vision_config, model.config.text_config
    assert (vision.hidden_size, vision.intermediate_size, text.hidden_size, text.intermediate_size) == widths
    vlm = HookedVLM.from_hf(model, processor=processor)
    inputs = vlm.prompt_inputs([Image.new("RGB", (700, 350), "red")], "hi")
    geometry = vlm.image_geometry(**vlm.split_inputs(inputs)[1])
    assert int(geometry.n_soft_tokens.sum()) == int((inputs["input_ids"] == vlm.image_token_id).sum())


def test_steering_refuses_what_the_language_model_never_reads(anyres):
    from vis_steer_lens import SteeringExplainer, UnreachableHookError
    from vis_steer_lens.testing import tiny_sae

    model, _, vlm = anyres
    # LLaVA-NeXT reads block n - 2 (the last block never reaches it); OneVision the last block before
    # SigLIP's final norm (which never does).
    late = (
        f"blocks.{N_LAYERS - 1}.hook_resid_post"
        if model.config.model_type == "llava_next"
        else "ln_final.hook_normalized"
    )
    with pytest.raises(UnreachableHookError, match=rf"blocks\.{vlm.feature_layer}\.hook_resid_post"):
        SteeringExplainer(vlm, tiny_sae(vlm, late, d_sae=8), coefficient=20.0)
