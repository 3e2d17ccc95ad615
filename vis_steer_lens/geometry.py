"""How images become the tokens a vision tower holds: one :class:`ImageGeometry` per batch.

An adapter owns its family's geometry. Fixed-grid towers (SigLIP in Gemma 3, InternViT in
InternVL3) hold every image as the same square grid of patches in row-major order, after a few
prefix tokens (a class token), one image per batch row. Native-resolution towers (Qwen2-VL,
Qwen2.5-VL) pack the patches of images of different sizes into one sequence and may hold them
in an order other than row-major (merge blocks, attention windows). AnyRes towers (LLaVA-NeXT,
LLaVA-OneVision) hold each image as several crops, a base crop and tiles, one batch row each: the
image's grid is its tiles stitched together, and ``view`` tells the base crop's patches apart.
Everything that is about patches reads the geometry instead of assuming a layout.

Token positions are counted over the residual stream flattened to ``[positions, d_model]``:
``resid.reshape(-1, d_model)`` lines up with every per-position field, whichever the layout
(``[images, tokens_per_image, d_model]`` for fixed grids, ``[1, tokens, d_model]`` packed,
``[crops, crop_tokens, d_model]`` for AnyRes).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch


@dataclass(frozen=True, eq=False)
class ImageGeometry:
    """Where every token of a batch of images sits, in the order the tower holds them.

    Attributes:
        image_index: ``[positions]`` long: the image each position belongs to.
        is_prefix: ``[positions]`` bool: a prefix token (class token, register), not a patch.
        row: ``[positions]`` long: the patch's row in its image's grid (``-1`` for prefix tokens).
        col: ``[positions]`` long: the patch's column (``-1`` for prefix tokens).
        grid_hw: ``[images, 2]`` long: each image's patch grid (rows, columns).
        span: ``[images, 2]`` long: each image's positions ``start:end`` (its tokens are contiguous).
        order: ``[positions]`` long: position ``p`` holds the token the tower's input (the
            processor's patch order, prefix tokens first per image) has at ``order[p]``. The
            identity for fixed grids; a permutation into attention windows for Qwen2.5-VL.
        soft_source: ``[positions]`` bool: the position feeds the language model's soft tokens
            (the projector reads it).
        n_soft_tokens: ``[images]`` long: soft tokens the language model receives per image.
        window: ``[positions]`` long, or ``None``: the attention window of each position, for
            towers whose windowed blocks attend within windows only (ids are unique across images).
        packed: Whether the residual stream is one sequence ``[1, positions, d_model]`` (images
            attend only to themselves) rather than one row per image ``[images, tokens, d_model]``.
        view: ``[positions]`` long: which view of its image a position belongs to. ``0`` (every
            position, for every family but AnyRes) is the image's grid that ``row``/``col``,
            ``grid_hw`` and :meth:`patch_map` describe (AnyRes: its tiles stitched into the whole
            image). ``1`` marks the patches of a second, coarser view of the same image, LLaVA-NeXT /
            OneVision's base crop, with ``row``/``col`` in its own square grid; :meth:`patch_map`
            leaves it out (:meth:`base_patch_positions` has it). ``2`` marks tile patches that cover
            only the processor's padding (``row``/``col`` ``-1``). Built all zeros when not given.
        crop_tokens: Positions per batch row of the residual stream where an image spans several
            rows (AnyRes crops ``[crops, tokens, d_model]``), else ``None`` (one row per image, or packed).
    """

    image_index: torch.Tensor
    is_prefix: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    grid_hw: torch.Tensor
    span: torch.Tensor
    order: torch.Tensor
    soft_source: torch.Tensor
    n_soft_tokens: torch.Tensor
    window: torch.Tensor | None = None
    packed: bool = False
    view: torch.Tensor | None = None
    crop_tokens: int | None = None

    def __post_init__(self) -> None:
        n = self.image_index.shape[0]
        if self.view is None:
            object.__setattr__(self, "view", torch.zeros(n, dtype=torch.long, device=self.image_index.device))
        for name in ("is_prefix", "row", "col", "order", "soft_source", "view"):
            if getattr(self, name).shape != (n,):
                raise ValueError(
                    f"ImageGeometry.{name} must have shape [{n}], got {tuple(getattr(self, name).shape)}."
                )
        if self.window is not None and self.window.shape != (n,):
            raise ValueError(f"ImageGeometry.window must have shape [{n}], got {tuple(self.window.shape)}.")
        if self.grid_hw.ndim != 2 or self.grid_hw.shape[1] != 2 or self.span.shape != self.grid_hw.shape:
            raise ValueError("ImageGeometry.grid_hw and span must both be [images, 2].")

    # ------------------------------------------------------------------ construction
    @classmethod
    def fixed_grid(
        cls,
        n_images: int,
        grid_size: int | tuple[int, int],
        n_prefix_tokens: int = 0,
        n_soft_tokens: int | None = None,
        soft_from_prefix: bool = False,
        device: torch.device | str | None = None,
    ) -> ImageGeometry:
        """Every image the same row-major grid after ``n_prefix_tokens`` prefix tokens, one per row.

        Args:
            n_images: Images in the batch (rows of the residual stream ``[images, tokens, d]``).
            grid_size: Patches per side, or ``(rows, columns)``.
            n_prefix_tokens: Class/register tokens before the patches of each image.
            n_soft_tokens: Soft tokens per image the language model receives (default: one per patch).
            soft_from_prefix: Whether the projector reads the prefix tokens too.
            device: Where the tensors live.
        """
        h, w = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
        per_image = n_prefix_tokens + h * w
        one_prefix = torch.arange(per_image, device=device) < n_prefix_tokens
        patch = (torch.arange(per_image, device=device) - n_prefix_tokens).clamp(min=0)
        one_row = torch.where(one_prefix, -1, patch // w)
        one_col = torch.where(one_prefix, -1, patch % w)
        starts = torch.arange(n_images, device=device) * per_image
        return cls(
            image_index=torch.arange(n_images, device=device).repeat_interleave(per_image),
            is_prefix=one_prefix.repeat(n_images),
            row=one_row.repeat(n_images),
            col=one_col.repeat(n_images),
            grid_hw=torch.tensor([[h, w]] * n_images, device=device, dtype=torch.long).reshape(n_images, 2),
            span=torch.stack([starts, starts + per_image], dim=1),
            order=torch.arange(n_images * per_image, device=device),
            soft_source=(~one_prefix | soft_from_prefix).repeat(n_images),
            n_soft_tokens=torch.full(
                (n_images,), h * w if n_soft_tokens is None else n_soft_tokens, device=device
            ),
            packed=False,
        )

    # ------------------------------------------------------------------ queries
    @property
    def n_images(self) -> int:
        """Images in the batch."""
        return int(self.grid_hw.shape[0])

    @property
    def n_positions(self) -> int:
        """Token positions the tower holds for the whole batch."""
        return int(self.image_index.shape[0])

    @property
    def is_patch(self) -> torch.Tensor:
        """``[positions]`` bool: a patch (not a prefix token), of any view."""
        return ~self.is_prefix

    @property
    def is_grid_patch(self) -> torch.Tensor:
        """``[positions]`` bool: a patch of its image's grid (view 0): what :meth:`patch_map` draws."""
        return ~self.is_prefix & (self.view == 0)

    def base_patch_positions(self, image: int) -> torch.Tensor:
        """``[n]`` long: the positions of one image's base-view patches (view 1, AnyRes), in the
        tower's order (row-major over the base crop); empty for images without a base view."""
        sl = self.image_positions(image)
        chosen = self.is_patch[sl] & (self.view[sl] == 1)
        return torch.arange(sl.start, sl.stop, device=self.row.device)[chosen]

    def grid(self, image: int) -> tuple[int, int]:
        """The patch grid ``(rows, columns)`` of one image."""
        h, w = self.grid_hw[image].tolist()
        return int(h), int(w)

    def image_positions(self, image: int) -> slice:
        """The positions of one image (a slice of the flattened residual stream)."""
        start, end = self.span[image].tolist()
        return slice(int(start), int(end))

    def patch_positions(self, image: int) -> torch.Tensor:
        """``[h * w]`` long: the positions of one image's patches, in row-major grid order."""
        sl = self.image_positions(image)
        is_patch = self.is_grid_patch[sl]
        rows, cols = self.row[sl][is_patch], self.col[sl][is_patch]
        h, w = self.grid(image)
        positions = torch.arange(sl.start, sl.stop, device=self.row.device)[is_patch]
        flat = torch.empty(h * w, dtype=torch.long, device=self.row.device)
        flat[rows * w + cols] = positions
        return flat

    def patch_map(self, values: torch.Tensor, image: int) -> torch.Tensor:
        """One image's per-patch values as a map in its own grid.

        Args:
            values: ``[positions, ...]`` over the whole batch (e.g. one feature's activations
                at every position), or ``[tokens_of_image, ...]`` over that image's span only.
            image: Which image.

        Returns:
            ``[h, w, ...]``.
        """
        h, w = self.grid(image)
        positions = self.patch_positions(image)
        if values.shape[0] != self.n_positions:
            sl = self.image_positions(image)
            if values.shape[0] != sl.stop - sl.start:
                raise ValueError(
                    f"Expected {self.n_positions} (batch) or {sl.stop - sl.start} (image {image}) values, "
                    f"got {values.shape[0]}."
                )
            positions = positions - sl.start
        return values[positions].reshape(h, w, *values.shape[1:])

    def from_patch_map(self, patch_map: torch.Tensor, image: int, fill: float = 0.0) -> torch.Tensor:
        """The inverse of :meth:`patch_map`: ``[h, w, ...]`` → ``[tokens_of_image, ...]`` over that
        image's span in the tower's order, prefix tokens set to ``fill``."""
        h, w = self.grid(image)
        if tuple(patch_map.shape[:2]) != (h, w):
            raise ValueError(
                f"Image {image} has a {h}x{w} grid, got a map of shape {tuple(patch_map.shape)}."
            )
        sl = self.image_positions(image)
        out = patch_map.new_full((sl.stop - sl.start, *patch_map.shape[2:]), fill)
        out[self.patch_positions(image) - sl.start] = patch_map.reshape(h * w, *patch_map.shape[2:])
        return out

    def to(self, device: torch.device | str) -> ImageGeometry:
        """The same geometry with its tensors on ``device``."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(self, **moved)


__all__ = ["ImageGeometry"]
