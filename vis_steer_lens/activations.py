"""Images in, vision activations out: the plumbing shared by SAE training, mining and scoring."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vis_steer_lens.geometry import ImageGeometry
from vis_steer_lens.image_sources import to_rgb

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}


def vision_model(model: Any) -> Any:
    """The :class:`~vis_steer_lens.HookedViT` of a HookedVLM, or the model itself."""
    return getattr(model, "vision", model)


class _OneTilePerImage:
    """An image processor called with the family's options for one tile per image."""

    def __init__(self, image_processor: Any, options: dict[str, Any]):
        self.image_processor, self.options = image_processor, options

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.image_processor(*args, **{**self.options, **kwargs})

    def __getattr__(self, name: str) -> Any:
        return getattr(self.image_processor, name)


def image_processor_of(model: Any, processor: Any = None) -> Any:
    """The image processor to use: the one given, else the model's (a HookedVLM's processor, a
    HookedViT's ``image_processor``).

    Statistics, maps and scores are per image, so every image must become one tower input: a
    family whose processor can tile an image (InternVL's ``crop_to_patches``) is called with its
    adapter's ``one_tile_per_image`` options.
    """
    processor = processor if processor is not None else getattr(model, "processor", None)
    if processor is None and getattr(model, "vision", None) is None:
        # A HookedViT alone (a vision-only tower) carries its image processor itself.
        processor = getattr(model, "image_processor", None)
    if processor is None:
        raise ValueError(
            "Turning images into pixel_values needs an image processor: pass processor=, use a HookedVLM "
            "loaded with its processor (or set vit.image_processor on a HookedViT), or pass pixel_values "
            "tensors instead of images."
        )
    image_processor = getattr(processor, "image_processor", processor)
    options = getattr(getattr(model, "adapter", None), "one_tile_per_image", None)
    return _OneTilePerImage(image_processor, options) if options else image_processor


def iter_images(source: Any) -> Iterator[Any]:
    """Iterate over the images of a folder, a ``datasets.Dataset`` (column ``image``) or any iterable.

    Items may be PIL images or ``[channels, H, W]`` pixel tensors; folders yield PIL images in
    sorted file order.
    """
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        if not folder.is_dir():
            raise ValueError(f"Image source {str(folder)!r} is not a folder.")
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"No image files ({', '.join(sorted(_IMAGE_SUFFIXES))}) under {str(folder)!r}.")
        for path in files:
            with Image.open(path) as image:
                yield to_rgb(image)
        return
    column_names = getattr(source, "column_names", None)
    if column_names is not None:  # a datasets.Dataset
        column = "image" if "image" in column_names else "img" if "img" in column_names else None
        if column is None:
            raise ValueError(f"The dataset has no 'image' column (columns: {column_names}).")
        for row in source:
            yield row[column]
        return
    yield from source


def batched(items: Iterable[Any], batch_size: int) -> Iterator[list[Any]]:
    """Group an iterable into lists of ``batch_size`` (the last may be shorter)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


#: Processed pixel values are normalised (about -3..3 for every family's processor); floats above
#: this look like raw 0..255 pixels.
RAW_PIXEL_LIMIT = 16.0


class PixelValuesError(ValueError):
    """A pixel tensor that breaks the one rule: integer tensors are images, floats processed pixels."""


def _is_integer_tensor(item: Any) -> bool:
    return (
        isinstance(item, torch.Tensor)
        and not item.is_floating_point()
        and not item.is_complex()
        and item.dtype != torch.bool
    )


def is_image(item: Any) -> bool:
    """Whether ``item`` is an image for the image processor (a PIL image, or a uint8 or other integer
    tensor of values 0..255), not already-processed pixel values (a floating tensor); see
    :func:`to_pixel_values`."""
    return isinstance(item, Image.Image) or _is_integer_tensor(item)


def check_processed_pixels(pixel_values: torch.Tensor) -> torch.Tensor:
    """Refuse floating pixel values that look like raw 0..255 pixels (values above :data:`RAW_PIXEL_LIMIT`).

    Raises:
        PixelValuesError: Saying how to pass such pixels so that they go through the processor.
    """
    if pixel_values.numel() and pixel_values.is_floating_point():
        top = float(pixel_values.detach().amax())
        if top > RAW_PIXEL_LIMIT:
            raise PixelValuesError(
                f"Float pixel tensors are taken as pixel values already processed (normalised, about -3..3), "
                f"but these reach {top:.4g}, like raw 0..255 pixels. Pass them as an image instead: "
                "`.round().clamp(0, 255).to(torch.uint8)` (a [channels, H, W] tensor per image; the model's "
                "processor then resizes and normalises it)."
            )
    return pixel_values


def needs_image_processor(images: Iterable[Any]) -> bool:
    """Whether any of ``images`` must go through the image processor (:func:`is_image`)."""
    return any(is_image(item) for item in images)


def tensor_to_image(tensor: torch.Tensor) -> Image.Image:
    """A uint8 ``[channels, H, W]`` image tensor (1 channel: gray, 3: RGB, 4: RGBA, values 0..255,
    as ``torchvision.io.read_image`` gives) as an RGB PIL image (:func:`~vis_steer_lens.image_sources.to_rgb`).

    Raises:
        ValueError: Not uint8, or not ``[1|3|4, H, W]``.
    """
    if not _is_integer_tensor(tensor) or tensor.ndim != 3 or tensor.shape[0] not in (1, 3, 4):
        raise PixelValuesError(
            f"An image tensor must be integer [channels, H, W] with 1, 3 or 4 channels, got {tuple(tensor.shape)} "
            f"{tensor.dtype}; permute an [H, W, channels] array with .permute(2, 0, 1)."
        )
    if tensor.dtype != torch.uint8:
        low, high = int(tensor.min()), int(tensor.max())
        if low < 0 or high > 255:
            raise PixelValuesError(
                f"An integer image tensor holds pixels 0..255, but this {tensor.dtype} one has values "
                f"{low}..{high}; scale it to 0..255 (16-bit images: `// 257`) and pass it as torch.uint8."
            )
        tensor = tensor.to(torch.uint8)
    array = tensor.detach().cpu().permute(1, 2, 0).numpy()
    return to_rgb(Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array))


def to_pixel_values(images: list[Any], image_processor: Any | None) -> torch.Tensor:
    """Stack a batch into the tower's ``[batch, channels, H, W]`` pixel values.

    The rule for each item (the same in HookedViT, HookedVLM, mining and the scorers): a PIL image,
    or a uint8 or other integer ``[channels, H, W]`` tensor (values 0..255, an image as
    ``torchvision.io.read_image`` gives it), is an image: it is made RGB
    (:func:`~vis_steer_lens.image_sources.to_rgb`) and run through ``image_processor`` (resized
    and normalised as the model expects). A floating tensor (any float dtype) is pixel values
    already processed and is used as it is; one with values above :data:`RAW_PIXEL_LIMIT` looks
    like raw 0..255 pixels and is refused (:func:`check_processed_pixels`). Other dtypes are refused.

    Args:
        images: The batch, images and pixel tensors in any mix (processed ones must match the
            processor's output shape).
        image_processor: Needed when the batch holds an image.

    Returns:
        ``[batch, channels, H, W]``.

    Raises:
        ValueError: An image without an image processor, a tensor of another dtype, or shapes that
            do not stack.
    """
    items = list(images)
    for item in items:
        if isinstance(item, torch.Tensor) and not (item.is_floating_point() or _is_integer_tensor(item)):
            raise PixelValuesError(
                f"A pixel tensor must be floating (pixel values already processed) or integer (an image, "
                f"values 0..255), got {item.dtype} {tuple(item.shape)}; pass an image as "
                "`.round().clamp(0, 255).to(torch.uint8)`."
            )
        elif not isinstance(item, (torch.Tensor, Image.Image)):
            raise ValueError(f"Expected PIL images or [channels, H, W] tensors, got a {type(item).__name__}.")
        elif isinstance(item, torch.Tensor) and item.is_floating_point():
            check_processed_pixels(item)
    positions = [i for i, item in enumerate(items) if is_image(item)]
    if not positions:
        return torch.stack(items)
    if image_processor is None:
        raise ValueError(
            "PIL images and uint8 image tensors need an image processor; pass processor=, or floating "
            "pixel tensors already processed."
        )
    pictures = [
        tensor_to_image(items[i]) if isinstance(items[i], torch.Tensor) else to_rgb(items[i])
        for i in positions
    ]
    processed = image_processor(images=pictures, return_tensors="pt")["pixel_values"]
    if len(positions) == len(items):
        return processed
    for position, pixels in zip(positions, processed, strict=True):
        items[position] = pixels
    shapes = sorted({tuple(item.shape) for item in items})
    if len(shapes) > 1:
        raise ValueError(
            f"A batch mixes processed pixel tensors and images whose processed shapes differ ({shapes}); "
            "pass pixel tensors of the processor's output shape, or images only."
        )
    return torch.stack(items)


def hook_activations(
    model: Any, hook_name: str, pixel_values: torch.Tensor, *, flatten: bool = False, **tower_inputs: Any
) -> torch.Tensor:
    """Activations at one vision hook, running the tower only as far as needed.

    Args:
        model: A HookedViT or HookedVLM (its hooks, including spliced SAEs, stay active).
        hook_name: Any vision hook name (all naming conventions accepted).
        pixel_values: ``[batch, channels, H, W]``.
        flatten: Lay per-head activations ``[batch, tokens, heads, d_head]`` out as an SAE reads
            them, ``[batch, tokens, heads * d_head]`` (see :meth:`~vis_steer_lens.hook_names.HookName.flatten`).
        **tower_inputs: What else the tower reads (a packed tower's ``image_grid_thw``).

    Returns:
        The activation, e.g. ``[batch, tokens, d_model]`` for residual hooks (prefix tokens
        such as a class token first, then the patches).
    """
    vit = vision_model(model)
    hook = vit.parse_hook_name(hook_name)
    captured: dict[str, torch.Tensor] = {}

    def capture(act: torch.Tensor, hook: Any) -> None:
        captured["act"] = act.detach()

    with torch.no_grad():
        vit.run_with_hooks(
            pixel_values, fwd_hooks=[(hook.name, capture)], stop_at_layer=hook.stop_at_layer, **tower_inputs
        )
    return hook.flatten(captured["act"]) if flatten else captured["act"]


def tower_inputs(
    model: Any, images: list[Any], image_processor: Any | None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A batch of images as the tower takes it: ``(pixel_values, other tower inputs)`` on its device.

    Fixed-grid towers: ``[batch, channels, H, W]`` by :func:`to_pixel_values`'s rule, and no other
    input. Native-resolution (packed) towers: each image at its own size through the image
    processor, which gives the flattened patches and what else the tower reads
    (``vit.tower_input_keys``); items must be images (PIL or integer tensors) there, since
    processed pixels of different sizes do not batch.
    """
    vit = vision_model(model)
    if not vit.variable_grids:
        pixel_values = to_pixel_values(images, image_processor)
        return pixel_values.to(device=vit.device, dtype=vit.dtype), {}
    if image_processor is None:
        raise ValueError(
            "A native-resolution tower reads images through its image processor; pass processor=."
        )
    for item in images:
        if isinstance(item, torch.Tensor) and item.is_floating_point():
            raise PixelValuesError(
                "A native-resolution tower takes images (PIL or uint8 [channels, H, W]) and processes each at "
                f"its own size; got processed float pixels {tuple(item.shape)}. Pass the images themselves."
            )
    pictures = [tensor_to_image(item) if isinstance(item, torch.Tensor) else to_rgb(item) for item in images]
    processed = image_processor(images=pictures, return_tensors="pt")
    pixel_values = processed["pixel_values"].to(device=vit.device, dtype=vit.dtype)
    return pixel_values, {key: processed[key].to(vit.device) for key in vit.tower_input_keys}


#: Which of an image's tokens to take: its patches, its prefix tokens (class, registers), or both.
TOKEN_SELECTIONS = ("patches", "prefix", "all")


def image_token_activations(
    model: Any, hook_name: str, images: list[Any], image_processor: Any | None, tokens: str = "patches"
) -> tuple[list[torch.Tensor], ImageGeometry]:
    """Each image's tokens at a hook, chosen by the geometry.

    Args:
        model: A HookedViT or HookedVLM.
        hook_name: Any vision hook name (per-head hooks are flattened as an SAE reads them).
        images: PIL images or ``[channels, H, W]`` tensors (fixed-grid towers also take processed pixels).
        image_processor: The model's image processor.
        tokens: ``"patches"`` (row-major over the image's own grid), ``"prefix"`` (class and
            register tokens) or ``"all"`` (the image's tokens in the tower's order).

    Returns:
        ``(activations, geometry)``: per image ``[n_i, d]``, and the batch's geometry.
    """
    if tokens not in TOKEN_SELECTIONS:
        raise ValueError(f"tokens must be one of {TOKEN_SELECTIONS}, got {tokens!r}.")
    vit = vision_model(model)
    pixel_values, extra = tower_inputs(model, images, image_processor)
    geometry = vit.image_geometry(pixel_values, **extra)
    acts = hook_activations(model, hook_name, pixel_values, flatten=True, **extra)
    # Positions count over the whole batch: [1, tokens, d] packed, [images, tokens, d] otherwise.
    flat = acts.reshape(-1, acts.shape[-1])
    geometry = geometry.to(flat.device)
    rows = []
    for image in range(geometry.n_images):
        if tokens == "patches":
            positions = geometry.patch_positions(image)
        else:
            span = geometry.image_positions(image)
            positions = torch.arange(span.start, span.stop, device=flat.device)
            if tokens == "prefix":
                positions = positions[geometry.is_prefix[span]]
        rows.append(flat[positions])
    return rows, geometry


def image_patch_activations(
    model: Any, hook_name: str, images: list[Any], image_processor: Any | None
) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
    """Each image's patch tokens at a hook, row-major over its own grid (:func:`image_token_activations`).

    Returns:
        ``(activations, grids)``: per image ``[h * w, d]`` and its grid ``(h, w)``.
    """
    rows, geometry = image_token_activations(model, hook_name, images, image_processor, "patches")
    return rows, [geometry.grid(i) for i in range(geometry.n_images)]


def image_feature_maps(
    model: Any, sae: Any, hook_name: str, images: list[Any], image_processor: Any | None
) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
    """An SAE's features on each image at its own grid (the geometry): fixed or native resolution alike.

    Returns:
        ``(codes, grids)``: per image ``[h * w, d_sae]`` row-major over its grid, on the SAE's
        device, and that grid ``(h, w)``.
    """
    acts, grids = image_patch_activations(model, hook_name, images, image_processor)
    with torch.no_grad():
        codes = [sae.encode(a.to(device=sae.W_enc.device, dtype=sae.W_enc.dtype)) for a in acts]
    return codes, grids


def patch_tokens(activations: torch.Tensor, model: Any) -> torch.Tensor:
    """Drop the prefix tokens (a class token, say): ``[batch, tokens, ...]`` → ``[batch, patches, ...]``.

    The one place that knows the patches follow ``cfg.n_prefix_tokens`` prefix tokens.
    """
    n_prefix = vision_model(model).cfg.n_prefix_tokens
    return activations[:, n_prefix:] if n_prefix else activations


def feature_activations(
    model: Any, sae: Any, hook_name: str, pixel_values: torch.Tensor, *, include_prefix_tokens: bool = False
) -> torch.Tensor:
    """An SAE's feature activations at its hook: ``[batch, patches, d_sae]`` on the SAE's device.

    Args:
        model: A HookedViT or HookedVLM.
        sae: A ``sae_lens.SAE`` reading ``hook_name``.
        hook_name: The SAE's hook (checked by the caller, e.g. with ``check_sae_fits``).
        pixel_values: ``[batch, channels, H, W]``.
        include_prefix_tokens: Keep prefix tokens (a class token) in front of the patches:
            ``[batch, tokens, d_sae]``. Patch statistics, top-k maps and heatmaps leave them out.
    """
    vit = vision_model(model)
    acts = hook_activations(
        model, hook_name, pixel_values.to(device=vit.device, dtype=vit.dtype), flatten=True
    )
    if not include_prefix_tokens:
        acts = patch_tokens(acts, vit)
    with torch.no_grad():
        return sae.encode(acts.to(device=sae.W_enc.device, dtype=sae.W_enc.dtype))
