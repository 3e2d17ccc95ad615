"""A hand-made 'SAE' whose features are known exactly: the share of each patch's pixels in one colour."""

from __future__ import annotations

import numpy as np
import torch

from vis_steer_lens.toy.world import CELL_SIZE, COLORS, GRID_SIZE, SHADED_COLORS

ORACLE_COLORS = ("red", "blue")


def color_fraction_encoder(images) -> torch.Tensor:
    """Images -> ``[n, 16, 2]``: per 16-px patch, the share of red pixels (feature 0) and blue (feature 1)."""
    out = []
    for image in images:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)  # [64, 64, 3]
        maps = []
        for name in ORACLE_COLORS:
            hit = np.zeros(pixels.shape[:2], dtype=bool)
            for rgb in (COLORS[name], SHADED_COLORS[name]):
                hit |= np.abs(pixels - np.asarray(rgb)).max(axis=-1) < 12
            cells = hit.reshape(GRID_SIZE, CELL_SIZE, GRID_SIZE, CELL_SIZE).mean(axis=(1, 3))
            maps.append(cells.reshape(-1))
        out.append(np.stack(maps, axis=-1))
    return torch.tensor(np.stack(out), dtype=torch.float32)


def red_on_black_encoder(images) -> torch.Tensor:
    """Like :func:`color_fraction_encoder`, plus feature 2: the red share only on black backgrounds
    (a context-specific detector, as SAEs on the toy tower learn them)."""
    colours = color_fraction_encoder(images)
    on_black = torch.tensor(
        [float(np.asarray(image.convert("RGB"))[0, 0].sum() == 0) for image in images]
    )  # the corner pixel is always background
    red_on_black = colours[:, :, 0] * on_black[:, None]
    return torch.cat([colours, red_on_black[:, :, None]], dim=-1)
