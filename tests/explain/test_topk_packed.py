"""Top-k and the hybrid on a native-resolution family (Qwen2.5-VL): the shown images keep their own
grid shapes, and the hybrid steers each image where its own map is active."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vis_steer_lens import SteeringInformedTopKExplainer, TopKExplainer, mine_top_activations
from vis_steer_lens.testing import tiny_sae, tiny_vlm

SIZES = [(48, 32), (32, 64), (64, 64), (40, 40), (80, 30), (30, 90)]


@pytest.fixture(scope="module")
def mined():
    vlm = tiny_vlm("qwen2_5_vl", vision_layers=4)
    sae = tiny_sae(vlm, "blocks.2.hook_resid_post", d_sae=16)
    gen = torch.Generator().manual_seed(0)
    images = [Image.fromarray((torch.rand(h, w, 3, generator=gen) * 255).byte().numpy()) for w, h in SIZES]
    return vlm, sae, mine_top_activations(vlm, sae, images, k=3, batch_size=4)


@pytest.mark.parametrize("display", ["heatmap", "mask"])
def test_shown_images_keep_their_own_grid(mined, display):
    vlm, _, result = mined
    explainer = TopKExplainer(result, vlm, k_images=3, display=display, max_new_tokens=5)
    processor = vlm.processor.image_processor
    for image_id, _, amap in result.top_images(1):
        shown = explainer._shown_image(result.image(image_id), amap)
        h, w = amap.shape
        assert shown.size == (w * 8, h * 8)
        grid = processor(images=[shown], return_tensors="pt")["image_grid_thw"][0, 1:].tolist()
        assert tuple(grid) == (h, w)  # the processor sees the shown image at the mined grid


def test_topk_equals_generate_on_the_shown_images(mined):
    vlm, _, result = mined
    explainer = TopKExplainer(result, vlm, k_images=2, max_new_tokens=5, stop_at_sentence_end=False)
    table = explainer.explain([0, 1])
    tokenizer = vlm.processor.tokenizer
    for feature, answer in zip(table["feature"], table["raw_generation"], strict=True):
        shown = [explainer._shown_image(result.image(i), m) for i, _, m in explainer._top(feature)]
        inputs = vlm.prompt_inputs([shown], explainer.prompt.topk(explainer.display))
        with torch.no_grad():
            tokens = vlm.generate(
                **inputs,
                max_new_tokens=5,
                eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
                pad_token_id=tokenizer.pad_token_id,
            )
        new = tokens[0, inputs["input_ids"].shape[1] :]
        assert answer == tokenizer.decode(new, skip_special_tokens=True)


def test_the_hybrid_steers_each_image_where_its_own_map_fires(mined):
    vlm, sae, result = mined
    hybrid = SteeringInformedTopKExplainer(
        result, vlm, sae=sae, coefficient=2.0, k_images=2, max_new_tokens=4
    )
    table = hybrid.explain([0, 1])
    assert all(len(ids) == 2 for ids in table["image_ids"])
    # The hook alone: on a packed batch of the two shown images, only active patches move.
    tops = [hybrid._top(1)]
    shown = [hybrid._shown_image(result.image(i), m) for i, _, m in tops[0]]
    inputs = vlm.prompt_inputs([shown], "What is in the image?")
    geometry = vlm.image_geometry(inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"])
    hook = vlm.vision.parse_hook_name(hybrid.hook_name)
    directions = hybrid.directions([1], [1]).float()
    add = hybrid._packed_add(geometry, tops, directions.expand(2, -1), hook)
    act = torch.randn(1, geometry.n_positions, vlm.vision.cfg.d_model)
    moved = (add(act, None) - act).abs().amax(dim=-1)[0] > 0
    expected = torch.cat(
        [geometry.from_patch_map(m > 0, image, fill=False) for image, (_, _, m) in enumerate(tops[0])]
    )
    assert torch.equal(moved, expected) and bool(expected.any())
