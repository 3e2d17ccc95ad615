"""Text-to-image generators that turn an explanation into images for the generation-AUROC scorer.

Any object with a ``name`` and ``__call__(text, n, seed) -> list[PIL.Image]`` is a generator. A
diffusers text-to-image pipeline ships here (the paper used Stable Diffusion 3.5 medium, 30 steps,
guidance 7.5, 3 images per feature); plug-ins register more (the toy world's renderer is
``vis_steer_lens.toy.ToyGenerator``, registered as ``"toy-renderer"``).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from PIL import Image

PAPER_DIFFUSION_MODEL = "stabilityai/stable-diffusion-3.5-medium"


@runtime_checkable
class ImageGenerator(Protocol):
    """Draws images for a text; the same (text, n, seed) must give the same images."""

    name: str

    def __call__(self, text: str, n: int, seed: int) -> list[Image.Image]: ...


class DiffusersGenerator:
    """A diffusers text-to-image pipeline as an image generator.

    The pipeline is loaded on first use (``AutoPipelineForText2Image.from_pretrained``), or given
    ready-made with ``pipeline=`` (anything callable as
    ``pipe(prompt=, num_images_per_prompt=, num_inference_steps=, guidance_scale=, generator=)``
    returning an object with ``.images``).

    Args:
        name_or_path: Hub id or local folder; the paper's choice is the default.
        num_inference_steps: Denoising steps (paper: 30).
        guidance_scale: Classifier-free guidance (paper: 7.5).
        device: Where the pipeline runs; CUDA when available, else CPU.
        dtype: Weights dtype; bfloat16 on CUDA, float32 on CPU when None.
        pipeline: A loaded pipeline to use instead of loading ``name_or_path``.
        **call_kwargs: Extra keyword arguments of every pipeline call (e.g. ``height=512``).
    """

    def __init__(
        self,
        name_or_path: str = PAPER_DIFFUSION_MODEL,
        num_inference_steps: int = 30,
        guidance_scale: float = 7.5,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        pipeline: Any = None,
        **call_kwargs: Any,
    ) -> None:
        self.name_or_path = name_or_path
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.call_kwargs = call_kwargs
        self._pipeline = pipeline
        self.name = f"diffusers:{name_or_path}:{num_inference_steps}steps:cfg{guidance_scale}"

    @property
    def pipeline(self) -> Any:
        """The diffusers pipeline, loaded on first access."""
        if self._pipeline is None:
            try:
                import diffusers
            except ImportError:
                raise ImportError(
                    "DiffusersGenerator needs the 'diffusers' package: pip install 'vis_steer_lens[diffusion]' "
                    "(or pip install diffusers), or use vis_steer_lens.toy.ToyGenerator for the toy world."
                ) from None
            pipe = diffusers.AutoPipelineForText2Image.from_pretrained(
                self.name_or_path, torch_dtype=self.dtype
            )
            pipe.set_progress_bar_config(disable=True)
            self._pipeline = pipe.to(self.device)
        return self._pipeline

    def __call__(self, text: str, n: int, seed: int) -> list[Image.Image]:
        """``n`` images for ``text``; the pipeline's noise is seeded with ``seed``."""
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}.")
        pipe = self.pipeline
        # Seed a generator on the pipeline's own device so CUDA runs are reproducible too.
        device = getattr(pipe, "device", None) or self.device
        generator = torch.Generator(device=device).manual_seed(int(seed))
        output = pipe(
            prompt=text,
            num_images_per_prompt=n,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            generator=generator,
            **self.call_kwargs,
        )
        images = list(output.images)
        if len(images) != n:
            raise ValueError(f"The pipeline returned {len(images)} images for num_images_per_prompt={n}.")
        return [image.convert("RGB") if isinstance(image, Image.Image) else image for image in images]
