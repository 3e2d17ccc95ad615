"""LLaVA-NeXT (``LlavaNextForConditionalGeneration``, LLaVA-1.6): LLaVA-1.5's CLIP tower and MLP
projector, with images at any resolution ("AnyRes").

AnyRes, as transformers runs it:

* The processor picks for each image the best of ``image_grid_pinpoints`` (a resolution that is a
  whole number of tower crops per side), resizes the image into it keeping its aspect ratio, pads the
  rest, and cuts it into ``tile_rows x tile_cols`` tiles in row-major order. The tower sees, per
  image, a *base* crop (the whole image resized to one crop) and then its tiles, all as batch rows:
  ``pixel_values`` ``[images, max_crops, channels, H, W]`` (padded), ``image_sizes`` ``[images, 2]``
  (original height, width).
* The projector maps every crop's patches (class token dropped, strategy ``"default"``); the tile
  features are stitched into one ``(tile_rows * g) x (tile_cols * g)`` grid (``g`` patches per crop
  side), the rows and columns that only hold padding are cut (*unpadding*), and a learned
  ``image_newline`` token ends each row. The image's soft tokens are the base crop's ``g * g``, then
  the unpadded stitched grid row by row with its newlines.

The geometry (:class:`~vis_steer_lens.geometry.ImageGeometry`) records this: an image's positions are
its crops (``crop_tokens`` positions per batch row), tile patches carry their row/column in the
stitched grid (so :meth:`~ImageGeometry.patch_map` draws the whole image), the base crop's patches are
``view`` 1, and ``soft_source`` marks the patches that survive unpadding.

:class:`AnyResAdapter` holds the tiling; :class:`LlavaNextAdapter` puts it on LLaVA-1.5's CLIP tower,
and :class:`~vis_steer_lens.adapters.llava_onevision.LlavaOnevisionAdapter` on SigLIP.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import torch
from torch import nn

from vis_steer_lens.adapters.base import VLMAdapter
from vis_steer_lens.adapters.llava import LLAVA_HOOK_NAMES, LlavaAdapter
from vis_steer_lens.geometry import ImageGeometry
from vis_steer_lens.hook_names import HookNameMap
from vis_steer_lens.hooked_vit import HookedViT, HookedViTConfig

#: CLIP inside LLaVA-NeXT: the same modules and paths as in LLaVA-1.5.
LLAVA_NEXT_HOOK_NAMES: HookNameMap = LLAVA_HOOK_NAMES


def feature_layer_index(layer: int | list[int], n_layers: int) -> int:
    """The ``stop_at_layer`` giving transformers' ``hidden_states[layer]`` (the residual stream
    entering block ``index``; ``n_layers``: after the last block, before any final norm).

    Raises:
        ValueError: For several feature layers (not supported).
    """
    if not isinstance(layer, int):
        raise ValueError(f"Several vision feature layers ({layer}) are not supported; expected one int.")
    return layer if layer >= 0 else n_layers + 1 + layer


class AnyResProjector(nn.Module):
    """The AnyRes projector: ``[crops, tokens, d_vision]`` and the batch's geometry →
    ``[1, all soft tokens, d_lm]`` (images one after the other, as the placeholder tokens are).

    Projects every crop as transformers does (prefix tokens dropped unless the projector reads them),
    then per image: the base crop's tokens, the tile patches that ``soft_source`` keeps (the unpadded
    stitched grid, row-major), resized where the family shrinks large grids, each row followed by
    ``image_newline``.
    """

    takes_geometry: ClassVar[bool] = True

    def __init__(self, model: nn.Module, adapter: AnyResAdapter, n_prefix_tokens: int):
        super().__init__()
        self.multi_modal_projector = model.model.multi_modal_projector
        self.image_newline = model.model.image_newline
        self.drop = n_prefix_tokens if model.config.vision_feature_select_strategy == "default" else 0
        object.__setattr__(self, "_adapter", adapter)
        object.__setattr__(self, "_config", model.config)

    def forward(self, features: torch.Tensor, geometry: ImageGeometry) -> torch.Tensor:
        tokens_per_crop = features.shape[1]
        projected = self.multi_modal_projector(features[:, self.drop :])  # [crops, kept, d_lm]
        kept = projected.shape[1]
        flat = projected.reshape(-1, projected.shape[-1])
        geometry = geometry.to(features.device)

        def rows_of(positions: torch.Tensor) -> torch.Tensor:
            return (positions // tokens_per_crop) * kept + positions % tokens_per_crop - self.drop

        newline = self.image_newline.to(flat.device, flat.dtype)
        per_image = []
        for image in range(geometry.n_images):
            span = geometry.image_positions(image)
            positions = torch.arange(span.start, span.stop, device=flat.device)
            first_crop = positions[:tokens_per_crop]
            base = flat[rows_of(first_crop[geometry.soft_source[first_crop]])]
            if len(geometry.base_patch_positions(image)) == 0:  # one crop: no tiles
                per_image.append(torch.cat([base, newline[None]], dim=0))
                continue
            grid = geometry.patch_positions(image)
            grid = grid[geometry.soft_source[grid]]  # the unpadded rectangle, row-major
            n_rows = int(geometry.row[grid].unique().numel())
            tiles = flat[rows_of(grid)].reshape(n_rows, -1, flat.shape[-1]).permute(2, 0, 1)
            tiles = self._adapter.shrink_tiles(tiles, self._config)  # [d_lm, rows, cols]
            tiles = torch.cat([tiles, newline[:, None, None].expand(*tiles.shape[:-1], 1)], dim=-1)
            per_image.append(torch.cat([base, tiles.flatten(1, 2).transpose(0, 1)], dim=0))
        return torch.cat(per_image, dim=0).unsqueeze(0)


class AnyResAdapter(VLMAdapter):
    """The AnyRes side of LLaVA-NeXT and LLaVA-OneVision, over a tower adapter's (CLIP, SigLIP) tower.

    Subclasses list it before the tower's adapter (``class LlavaNextAdapter(AnyResAdapter,
    LlavaAdapter)``); the VLM's tiling settings (``image_grid_pinpoints``, the feature layer and
    strategy) are recorded in the tower config's ``extra`` by :meth:`vlm_tower`.
    """

    tower_input_keys: ClassVar[tuple[str, ...]] = ("image_sizes",)
    # In both: the language model's forward takes them too (and ignores them beside soft tokens).
    language_input_keys: ClassVar[tuple[str, ...]] = ("input_ids", "attention_mask", "image_sizes")
    end_of_turn_tokens: ClassVar[tuple[str, ...]] = ()

    # ---- the settings a tower of a VLM reads
    def anyres_settings(self, model: nn.Module) -> dict[str, Any]:
        """The VLM config's tiling settings, for the tower's geometry."""
        config = model.config
        return dict(
            image_grid_pinpoints=[list(p) for p in config.image_grid_pinpoints],
            drops_prefix=config.vision_feature_select_strategy == "default",
            vision_aspect_ratio=getattr(config, "vision_aspect_ratio", None),
        )

    def vlm_tower(self, model: nn.Module, model_name: str | None = None) -> HookedViT:
        """The tower's :class:`HookedViT` with the VLM's tiling: crops as batch rows, tiled geometry."""
        tower = self.tower(model)
        name = model_name or getattr(tower.config, "_name_or_path", "") or "unnamed"
        cfg = self.tower_config(tower, name)
        cfg.extra.update(anyres=self.anyres_settings(model))
        parts = self.tower_parts(tower)
        parts.geometry = functools.partial(self.image_geometry, cfg)
        parts.crops = functools.partial(self.crops, cfg)
        parts.input_keys = tuple(self.tower_input_keys)
        parts.max_patches = functools.partial(self.max_patches_per_image, cfg)
        return HookedViT(cfg, parts, name_map=self.hook_name_map, hf_tower=tower)

    # ---- tiling
    def crop_counts(self, cfg: HookedViTConfig, image_sizes: torch.Tensor, **tower_inputs: Any) -> list[int]:
        """Crops per image (1 base + tiles) as transformers counts them."""
        from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

        pinpoints = self._settings(cfg)["image_grid_pinpoints"]
        return [
            image_size_to_num_patches(size, grid_pinpoints=pinpoints, patch_size=cfg.image_size)
            for size in image_sizes.to("cpu").long()
        ]

    def tile_grid(self, cfg: HookedViTConfig, image_size: torch.Tensor) -> tuple[int, int]:
        """``(tile_rows, tile_cols)`` of one image of original size ``(height, width)``."""
        from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape

        rows, cols = get_anyres_image_grid_shape(
            image_size.to("cpu").long(), self._settings(cfg)["image_grid_pinpoints"], cfg.image_size
        )
        return int(rows), int(cols)

    def shrink_tiles(self, tiles: torch.Tensor, config: Any) -> torch.Tensor:
        """The unpadded stitched features ``[d, rows, cols]`` as the language model gets them (as they
        are; OneVision shrinks large grids)."""
        return tiles

    def shrunk_shape(self, rows: int, cols: int, cfg: HookedViTConfig) -> tuple[int, int]:
        """The shape :meth:`shrink_tiles` gives an unpadded ``rows x cols`` grid (unchanged here)."""
        return rows, cols

    def _settings(self, cfg: HookedViTConfig) -> dict[str, Any]:
        settings = cfg.extra.get("anyres")
        if settings is None:
            raise ValueError(
                f"This {cfg.family} tower was wrapped without its VLM's tiling settings; wrap the whole model "
                "with HookedVLM.from_hf (a bare tower is the plain LLaVA / SigLIP tower)."
            )
        return settings

    def crops(
        self,
        cfg: HookedViTConfig,
        pixel_values: torch.Tensor,
        geometry: ImageGeometry | None = None,
        image_sizes: torch.Tensor | None = None,
        **tower_inputs: Any,
    ) -> torch.Tensor:
        """``[images, max_crops, channels, H, W]`` → ``[crops, channels, H, W]``: each image's base crop
        and tiles, the padding rows dropped (as transformers does), counted by the batch's ``geometry``
        or else by ``image_sizes``; 4-D input is taken as crops already."""
        if pixel_values.ndim == 4:
            return pixel_values
        if pixel_values.ndim != 5:
            raise ValueError(
                f"An AnyRes tower takes pixel_values [images, crops, channels, H, W], got {tuple(pixel_values.shape)}."
            )
        if geometry is not None and geometry.crop_tokens:
            counts = ((geometry.span[:, 1] - geometry.span[:, 0]) // geometry.crop_tokens).tolist()
        else:
            counts = self._checked_counts(cfg, pixel_values, image_sizes, **tower_inputs)
        return torch.cat([pixels[:n] for pixels, n in zip(pixel_values, counts, strict=True)], dim=0)

    def _checked_counts(self, cfg, pixel_values, image_sizes, **tower_inputs) -> list[int]:
        if image_sizes is None:
            raise ValueError(
                f"The {self.name} tower needs image_sizes with pixel_values (the processor gives both)."
            )
        unknown = set(tower_inputs) - set(self.tower_input_keys)
        if unknown:
            raise ValueError(
                f"The {self.name} tower takes {self.tower_input_keys}, got also {sorted(unknown)}."
            )
        counts = self.crop_counts(cfg, image_sizes, **tower_inputs)
        if pixel_values.ndim == 5 and (
            pixel_values.shape[0] != len(counts) or max(counts) > pixel_values.shape[1]
        ):
            raise ValueError(
                f"image_sizes describes {len(counts)} images of up to {max(counts)} crops, pixel_values has "
                f"shape {tuple(pixel_values.shape)}."
            )
        if pixel_values.ndim == 4 and pixel_values.shape[0] != sum(counts):
            raise ValueError(
                f"image_sizes describes {sum(counts)} crops, pixel_values holds {pixel_values.shape[0]}."
            )
        return counts

    def image_geometry(
        self, cfg: HookedViTConfig, pixel_values: torch.Tensor, image_sizes=None, **tower_inputs: Any
    ) -> ImageGeometry:
        """The tiled geometry: per image its base crop (``view`` 1, its own ``g x g`` grid) then its tiles.

        The tiles' patches are stitched into one grid in the processor's padded canvas; the image's grid
        (``grid_hw``, ``view`` 0) is the part transformers keeps after unpadding, i.e. the image itself,
        with row/col counted from its top-left patch. Tile patches that only cover the padding are
        ``view`` 2 with row/col ``-1`` (they feed nothing). ``crop_tokens`` positions per crop.

        Args:
            cfg: The tower's config (with the VLM's tiling settings).
            pixel_values: ``[images, max_crops, channels, H, W]`` from the processor (or the crops ``[crops, ...]``).
            image_sizes: ``[images, 2]`` original (height, width) per image.
        """
        from transformers.models.llava_next.modeling_llava_next import unpad_image

        if "anyres" not in cfg.extra:  # a bare tower (HookedViT.from_pretrained): crops as plain images
            return VLMAdapter.image_geometry(self, cfg, pixel_values, **tower_inputs)
        counts = self._checked_counts(cfg, pixel_values, image_sizes, **tower_inputs)
        settings = self._settings(cfg)
        g, n_prefix = cfg.grid_size, cfg.n_prefix_tokens
        per_crop = n_prefix + g * g
        prefix_feeds = not settings["drops_prefix"]
        in_crop = torch.arange(per_crop)
        crop_prefix = in_crop < n_prefix
        patch = (in_crop - n_prefix).clamp(min=0)
        fields: dict[str, list[torch.Tensor]] = {
            k: [] for k in ("image", "prefix", "row", "col", "soft", "view")
        }
        grids, n_soft = [], []
        for image, n_crops in enumerate(counts):
            base_soft = int(n_prefix * prefix_feeds) + g * g
            if n_crops == 1:  # the whole image is one crop (OneVision's multi-image rows)
                views, rows, cols, soft = [0], [patch // g], [patch % g], [~crop_prefix | prefix_feeds]
                grids.append((g, g))
                n_soft.append(base_soft + 1)  # and one newline
            else:
                tile_rows, tile_cols = self.tile_grid(cfg, image_sizes[image])
                if tile_rows * tile_cols != n_crops - 1:
                    raise ValueError(f"Image {image}: {n_crops - 1} tiles, expected {tile_rows}x{tile_cols}.")
                height, width = tile_rows * g, tile_cols * g
                index = torch.arange(height * width).reshape(1, height, width)
                unpadded = unpad_image(index, image_sizes[image].to("cpu"))[0]  # what transformers keeps
                kept = torch.zeros(height * width, dtype=torch.bool)
                kept[unpadded.reshape(-1)] = True
                top, left = divmod(int(unpadded[0, 0]), width)  # the unpadded rectangle's corner
                shrunk = self.shrunk_shape(unpadded.shape[0], unpadded.shape[1], cfg)
                views, rows, cols, soft = [1], [patch // g], [patch % g], [~crop_prefix | prefix_feeds]
                for tile in range(n_crops - 1):
                    row = (tile // tile_cols) * g + patch // g  # in the padded stitched canvas
                    col = (tile % tile_cols) * g + patch % g
                    inside = kept[row * width + col]
                    views.append(torch.where(inside, 0, 2))
                    rows.append(torch.where(inside, row - top, -1))
                    cols.append(torch.where(inside, col - left, -1))
                    soft.append(~crop_prefix & inside | (crop_prefix & prefix_feeds))
                grids.append(tuple(unpadded.shape))
                n_soft.append(base_soft + shrunk[0] * (shrunk[1] + 1))
            for crop, view in enumerate(views):
                fields["image"].append(torch.full((per_crop,), image))
                fields["prefix"].append(crop_prefix)
                fields["row"].append(torch.where(crop_prefix, -1, rows[crop]))
                fields["col"].append(torch.where(crop_prefix, -1, cols[crop]))
                fields["soft"].append(soft[crop])
                fields["view"].append(torch.where(crop_prefix, 0, view))
        lengths = torch.tensor(counts) * per_crop
        ends = lengths.cumsum(0)
        device = pixel_values.device
        n = int(ends[-1])
        return ImageGeometry(
            image_index=torch.cat(fields["image"]).to(device),
            is_prefix=torch.cat(fields["prefix"]).to(device),
            row=torch.cat(fields["row"]).to(device),
            col=torch.cat(fields["col"]).to(device),
            grid_hw=torch.tensor(grids, dtype=torch.long).reshape(-1, 2).to(device),
            span=torch.stack([ends - lengths, ends], dim=1).to(device),
            order=torch.arange(n, device=device),
            soft_source=torch.cat(fields["soft"]).to(device),
            n_soft_tokens=torch.tensor(n_soft, dtype=torch.long).to(device),
            view=torch.cat(fields["view"]).to(device),
            crop_tokens=per_crop,
        )

    def max_patches_per_image(self, cfg: HookedViTConfig, image_processor: Any = None) -> int:
        """The largest stitched grid the pinpoints allow, in patches (a bare tower's crop size without them)."""
        if "anyres" not in cfg.extra:
            return cfg.n_patches
        pinpoints = self._settings(cfg)["image_grid_pinpoints"]
        return max((h // cfg.patch_size) * (w // cfg.patch_size) for h, w in pinpoints)

    # ---- the whole model
    def projector(self, model: nn.Module) -> nn.Module:
        return AnyResProjector(model, self, self.layout.get("n_prefix_tokens", 0))

    def projector_stop_at_layer(self, model: nn.Module, n_layers: int) -> int | None:
        """Always a layer: transformers reads ``hidden_states[vision_feature_layer]``, before any final norm."""
        return feature_layer_index(model.config.vision_feature_layer, n_layers)

    def reads_prefix_tokens(self, model: nn.Module) -> bool:
        return model.config.vision_feature_select_strategy != "default"

    def pooled_image_features(self, image_features: torch.Tensor) -> Any:
        """transformers concatenates a sequence of per-image soft tokens; one ``[soft_tokens, d_lm]`` suffices."""
        return (image_features.reshape(-1, image_features.shape[-1]),)

    def prefill_masks(self, hf_model: nn.Module, inputs: dict[str, torch.Tensor]) -> dict | None:
        return None

    # ---- inputs
    def empty_image_inputs(self, kind: str, processor: Any, dtype: torch.dtype = torch.float32) -> dict:
        """The empty image (:attr:`empty_image_size` px square) as the processor tiles it: ``pixel_values``
        ``[1, crops, channels, H, W]`` (base and tiles) and the tower's other inputs (``image_sizes``)."""
        image_processor = getattr(processor, "image_processor", processor)
        out = image_processor(images=[self.empty_image(kind, processor)], return_tensors="pt")
        pixel_values = out["pixel_values"].to(dtype)
        if kind == "zeros":
            pixel_values = torch.zeros_like(pixel_values)
        extra = {key: torch.as_tensor(out[key]) for key in self.tower_input_keys if key in out}
        return {"pixel_values": pixel_values, **extra}

    def empty_image_pixel_values(
        self, kind: str, processor: Any, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        return self.empty_image_inputs(kind, processor, dtype)["pixel_values"]


class LlavaNextAdapter(AnyResAdapter, LlavaAdapter):
    """Adapter for transformers' ``LlavaNextForConditionalGeneration`` (LLaVA-1.6 / NeXT: CLIP ViT-L/14-336,
    AnyRes tiling, Vicuna/Mistral/... language models)."""

    name: ClassVar[str] = "llava_next"
    model_class: ClassVar[str] = "LlavaNextForConditionalGeneration"
    model_types: ClassVar[tuple[str, ...]] = ("llava_next",)
    model_name_markers: ClassVar[tuple[str, ...]] = ("llava-v1.6", "llava-1.6", "llava-next", "llava_next")
    hook_name_map: ClassVar[HookNameMap] = LLAVA_NEXT_HOOK_NAMES


__all__ = [
    "LLAVA_NEXT_HOOK_NAMES",
    "AnyResAdapter",
    "AnyResProjector",
    "LlavaNextAdapter",
    "feature_layer_index",
]
