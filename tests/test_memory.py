"""Memory budgets: free memory, per-row estimates and batch_size="auto"."""

from __future__ import annotations

import pytest

from vis_steer_lens import SteeringExplainer, memory
from vis_steer_lens.memory import auto_batch_size, check_batch_size, explain_bytes_per_row
from vis_steer_lens.testing import tiny_sae, tiny_vlm


@pytest.fixture(scope="module")
def vlm():
    return tiny_vlm("gemma3", seed=2)


def test_the_budget_decides_the_batch():
    assert auto_batch_size(100, budget=1050) == 10
    assert auto_batch_size(100, budget=50) == 1  # one always runs
    assert auto_batch_size(1, budget=10**9, limit=64) == 64
    assert memory.available_bytes("cpu") > 0


@pytest.mark.parametrize("bad", [0, -3, 2.5, "big", True, None])
def test_a_batch_size_is_a_positive_integer_or_auto(bad):
    with pytest.raises(ValueError, match="integer >= 1 or 'auto'"):
        check_batch_size(bad)


def test_a_row_costs_more_with_more_images_and_tokens(vlm):
    one = explain_bytes_per_row(vlm, 1, 8)
    assert explain_bytes_per_row(vlm, 5, 8) > one
    assert explain_bytes_per_row(vlm, 1, 64) > one
    assert explain_bytes_per_row(vlm, 1, 8, from_layer=vlm.vision.cfg.n_layers) < one


def test_auto_batch_fits_the_budget_and_changes_nothing_but_speed(vlm, monkeypatch):
    sae = tiny_sae(vlm, "blocks.0.hook_resid_post", d_sae=16, k=3)
    fixed = SteeringExplainer(vlm, sae, coefficient=20.0, max_new_tokens=4, batch_size=16).explain(
        range(10), progress=False
    )
    auto = SteeringExplainer(vlm, sae, coefficient=20.0, max_new_tokens=4, batch_size="auto")
    per_row = auto._row_bytes()
    monkeypatch.setattr(
        memory, "available_bytes", lambda device=None: int(3.5 * per_row / memory.DEFAULT_BUDGET_FRACTION)
    )
    frame = auto.explain(range(10), progress=False)
    assert auto.batch_size == 3 and set(frame["batch_size"]) == {3}  # chosen, and recorded in every row
    assert frame["raw_generation"].tolist() == fixed["raw_generation"].tolist()


def test_auto_batch_mining_fits_the_budget_and_mines_the_same(vlm, monkeypatch):
    import torch

    from vis_steer_lens import mine_top_activations
    from vis_steer_lens.memory import mining_bytes_per_image

    sae = tiny_sae(vlm, "blocks.1.hook_resid_post", d_sae=16, k=3)
    images = [torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(9)]
    fixed = mine_top_activations(vlm, sae, images, k=3, batch_size=9, progress=False)
    per_image = mining_bytes_per_image(vlm.vision, sae)
    monkeypatch.setattr(
        memory, "available_bytes", lambda device=None: int(2.5 * per_image / memory.DEFAULT_BUDGET_FRACTION)
    )
    auto = mine_top_activations(vlm, sae, images, k=3, batch_size="auto", progress=False)
    assert auto.meta["batch_size"] == 2 and auto.meta["batch_size_auto"]
    assert torch.equal(auto.top_image_ids, fixed.top_image_ids) and torch.equal(auto.top_maps, fixed.top_maps)


def test_native_resolution_costs_follow_the_image_size():
    """A packed tower's per-image cost is the processor's bound by default, and an image's own size
    when given: its soft tokens match the prompt's count for an image of that many patches."""
    from PIL import Image

    from vis_steer_lens.memory import TowerShape, explain_bytes_per_row, image_tokens_per_image
    from vis_steer_lens.testing import tiny_vlm

    vlm = tiny_vlm("qwen2_5_vl", vision_layers=2)
    bound = vlm.vision.max_patches_per_image(vlm.vision.image_processor)
    assert TowerShape.of(vlm).tokens == bound
    image = Image.new("RGB", (96, 64))
    inputs = vlm.prompt_inputs([image], "x")
    _, tower = vlm.split_inputs(inputs)
    h, w = vlm.image_geometry(**tower).grid(0)
    assert h * w < bound
    assert image_tokens_per_image(vlm, h * w) == int((inputs["input_ids"] == vlm.image_token_id).sum())
    small = explain_bytes_per_row(vlm, 1, 8, patches=h * w)
    assert small < explain_bytes_per_row(vlm, 1, 8) < explain_bytes_per_row(vlm, 5, 8)
