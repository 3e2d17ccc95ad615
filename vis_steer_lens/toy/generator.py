"""The toy world's text-to-image model, for scoring explanations (a plug-in image generator)."""

from __future__ import annotations

from PIL import Image

from vis_steer_lens.toy.renderer import ToyRenderer
from vis_steer_lens.toy.world import ToyWorld


class ToyGenerator:
    """The toy world's text-to-image model: draws scenes with every concept the text names.

    Args:
        world: World whose sampler fills in what the text leaves unsaid; ``ToyWorld(0)`` if None.
    """

    name = "toy-renderer"

    def __init__(self, world: ToyWorld | None = None) -> None:
        self.renderer = ToyRenderer(world)

    def __call__(self, text: str, n: int, seed: int) -> list[Image.Image]:
        """``n`` 64×64 RGB images for ``text``, deterministic in ``seed``."""
        return self.renderer(text, n, seed)

    def scenes(self, text: str, n: int, seed: int):
        """The scenes behind ``__call__(text, n, seed)``, for checking against ground truth."""
        return self.renderer.scenes(text, n, seed)


__all__ = ["ToyGenerator"]
