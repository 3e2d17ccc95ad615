"""Drawing a feature's activation map onto an image: masked patches or a heatmap overlay."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

#: Colour of masked-out patches; no other pixel of the toy world is this gray.
MASK_FILL = (128, 128, 128)


def _grid(values, name: str) -> np.ndarray:
    array = values.detach().float().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if array.ndim == 1:
        side = int(round(array.size**0.5))
        if side * side != array.size:
            raise ValueError(
                f"{name} must be a square grid or a flat list of grid*grid values, got {array.size}."
            )
        array = array.reshape(side, side)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a [rows, cols] array, got shape {array.shape}.")
    return array


def _fit(image: Image.Image | np.ndarray, grid: tuple[int, int], patch_size: int) -> np.ndarray:
    """The image as uint8 RGB at the model's input size (``rows * patch_size`` high, ``cols *
    patch_size`` wide: a square for fixed-grid towers, the image's own shape for native-resolution ones)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image.astype(np.uint8))
    size = (grid[1] * patch_size, grid[0] * patch_size)
    image = image.convert("RGB")
    if image.size != size:
        image = image.resize(size, Image.BICUBIC)
    return np.asarray(image).copy()


def mask_patches(image, keep, patch_size: int, fill: tuple[int, int, int] = MASK_FILL) -> Image.Image:
    """Paint every patch not kept in a flat colour, the Top-k "pixelated" look.

    Args:
        image: PIL image or ``[H, W, 3]`` uint8 array; resized to the grid's shape times ``patch_size``.
        keep: Bool ``[rows, cols]`` (the image's own grid; a flat list must be square): True keeps the patch. An activation map works too
            (patches with activation > 0 are kept).
        patch_size: Pixels per patch side at the model's input size.
        fill: RGB colour of dropped patches.
    """
    keep = _grid(keep, "keep") > 0
    array = _fit(image, keep.shape, patch_size)
    array[~np.kron(keep, np.ones((patch_size, patch_size), dtype=bool))] = fill
    return Image.fromarray(array, mode="RGB")


def heatmap_overlay(
    image, activations, patch_size: int, max_value: float | None = None, max_alpha: float = 0.5
) -> Image.Image:
    """Blend green over each patch in proportion to its activation.

    Args:
        image: PIL image or ``[H, W, 3]`` uint8 array; resized to the grid's shape times ``patch_size``.
        activations: ``[rows, cols]`` (the image's own grid; a flat list must be square) patch
            activations; negatives count as zero.
        patch_size: Pixels per patch side at the model's input size.
        max_value: Activation given the full overlay; defaults to the map's maximum.
        max_alpha: Opacity at ``max_value``.
    """
    grid = np.clip(_grid(activations, "activations").astype(np.float32), 0.0, None)
    array = _fit(image, grid.shape, patch_size).astype(np.float32)
    scale = float(grid.max()) if max_value is None else float(max_value)
    alpha = np.zeros_like(grid) if scale <= 0 else np.clip(grid / scale, 0.0, 1.0) * max_alpha
    pixel_alpha = np.kron(alpha, np.ones((patch_size, patch_size), dtype=np.float32))[..., None]
    blended = array * (1 - pixel_alpha) + np.array([0.0, 255.0, 0.0], dtype=np.float32) * pixel_alpha
    return Image.fromarray(blended.round().astype(np.uint8), mode="RGB")
