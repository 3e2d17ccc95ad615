"""The toy world as an image source: random-access, reproducible toy images (a plug-in image-source kind)."""

from __future__ import annotations

import random
from typing import Any

from PIL import Image

from vis_steer_lens.image_sources import ImageSource
from vis_steer_lens.toy.world import ToyWorld


class ToyImages(ImageSource):
    """Images of the toy world, each drawn from its own seeded stream so any index is reachable directly.

    Image ``i`` depends only on ``(seed, i)`` (not on which images were drawn before), so the
    collection is random-access and reproducible. It is a different sequence from
    ``ToyWorld(seed).sample(n)``, which draws every scene from one shared stream.

    Args:
        seed: World seed.
        n: Number of images.
        max_objects: Most objects per scene.
    """

    def __init__(self, seed: int = 0, n: int = 1000, max_objects: int = 2) -> None:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}.")
        self.seed = int(seed)
        self.n = int(n)
        self.max_objects = int(max_objects)
        self.world = ToyWorld(seed=self.seed, max_objects=self.max_objects)

    def __len__(self) -> int:
        return self.n

    def scene(self, index: int) -> Any:
        """The ground-truth :class:`~vis_steer_lens.toy.world.Scene` of image ``index``."""
        index = self._check_index(index)
        # A string seed is hashed with SHA-512 by `random`, so it is stable across processes.
        rng = random.Random(f"toy-images:{self.seed}:{self.max_objects}:{index}")
        return self.world.sample_scene(rng=rng)

    def __getitem__(self, index: int) -> Image.Image:
        return self.world.render(self.scene(index))

    @property
    def source_id(self) -> str:
        return f"toy:seed={self.seed}:n={self.n}:max_objects={self.max_objects}"

    def describe(self) -> dict[str, Any]:
        return {"kind": "toy", "seed": self.seed, "n": self.n, "max_objects": self.max_objects}


def open_toy_images(spec: dict[str, Any]) -> ToyImages:
    """Reopen :meth:`ToyImages.describe`'s output (the ``"toy"`` image-source kind)."""
    return ToyImages(seed=spec["seed"], n=spec["n"], max_objects=spec.get("max_objects", 2))


__all__ = ["ToyImages", "open_toy_images"]
