"""ImageGeometry: where every token of a batch sits, for fixed grids and packed sequences."""

from __future__ import annotations

import pytest
import torch

from vis_steer_lens.geometry import ImageGeometry
from vis_steer_lens.testing import tiny_vlm


def test_a_fixed_grid_with_a_class_token():
    geometry = ImageGeometry.fixed_grid(2, 3, n_prefix_tokens=1)
    assert geometry.n_images == 2 and geometry.n_positions == 20
    assert geometry.is_prefix.tolist() == ([True] + [False] * 9) * 2
    assert geometry.row[:4].tolist() == [-1, 0, 0, 0] and geometry.col[:4].tolist() == [-1, 0, 1, 2]
    assert geometry.span.tolist() == [[0, 10], [10, 20]]
    assert geometry.grid(1) == (3, 3)
    assert torch.equal(geometry.order, torch.arange(20))
    assert geometry.soft_source.sum() == 18 and not geometry.packed
    # Per-position values of the batch → one image's map and back.
    values = torch.arange(20.0)
    patch_map = geometry.patch_map(values, 1)
    assert patch_map.tolist() == [[11, 12, 13], [14, 15, 16], [17, 18, 19]]
    assert geometry.patch_map(values[10:20], 1).equal(patch_map)
    back = geometry.from_patch_map(patch_map, 1, fill=-1)
    assert back.tolist() == [-1] + list(range(11, 20))


def test_a_non_square_grid_in_any_order_maps_back_to_rows_and_columns():
    # One 2x3 image whose tokens the tower holds in some permuted order.
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    rows, cols = order // 3, order % 3
    n = 6
    geometry = ImageGeometry(
        image_index=torch.zeros(n, dtype=torch.long),
        is_prefix=torch.zeros(n, dtype=torch.bool),
        row=rows,
        col=cols,
        grid_hw=torch.tensor([[2, 3]]),
        span=torch.tensor([[0, n]]),
        order=order,
        soft_source=torch.ones(n, dtype=torch.bool),
        n_soft_tokens=torch.tensor([6]),
        packed=True,
    )
    values = order.float() * 10  # the value of input token t is 10 t
    assert geometry.patch_map(values, 0).tolist() == [[0, 10, 20], [30, 40, 50]]
    assert geometry.from_patch_map(geometry.patch_map(values, 0), 0).equal(values)
    with pytest.raises(ValueError, match="2x3 grid"):
        geometry.from_patch_map(torch.zeros(3, 2), 0)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="must have shape"):
        ImageGeometry(
            image_index=torch.zeros(3, dtype=torch.long),
            is_prefix=torch.zeros(2, dtype=torch.bool),
            row=torch.zeros(3, dtype=torch.long),
            col=torch.zeros(3, dtype=torch.long),
            grid_hw=torch.tensor([[1, 3]]),
            span=torch.tensor([[0, 3]]),
            order=torch.arange(3),
            soft_source=torch.ones(3, dtype=torch.bool),
            n_soft_tokens=torch.tensor([3]),
        )


@pytest.mark.parametrize("family", ["gemma3", "internvl3"])
def test_fixed_grid_families_give_their_grid(family):
    vlm = tiny_vlm(family)
    pixels = torch.zeros(2, 3, 32, 32)
    geometry = vlm.vision.image_geometry(pixels)
    from_adapter = vlm.adapter.image_geometry(vlm.vision.cfg, pixels)
    assert torch.equal(geometry.row, from_adapter.row) and torch.equal(geometry.span, from_adapter.span)
    cfg = vlm.vision.cfg
    assert geometry.n_positions == 2 * cfg.n_tokens
    assert int(geometry.is_prefix.sum()) == 2 * cfg.n_prefix_tokens
    assert geometry.grid(0) == (cfg.grid_size, cfg.grid_size)
    # The flattened residual stream lines up with the geometry's positions.
    _, cache = vlm.vision.run_with_cache(pixels, names_filter="blocks.0.hook_resid_post")
    assert cache["blocks.0.hook_resid_post"].reshape(-1, cfg.d_model).shape[0] == geometry.n_positions
