"""The toy world's segmenter: the exact pixels of the objects an explanation names.

The renderer knows every object's pixels, so on the toy world the segmentation IoU needs no
detector: the "detections" of a text in an image are the scene's objects that the text names,
each as its own mask, in the scene's order (by cell). Registered as the segmenter ``"toy"``
(:data:`vis_steer_lens.plugins.SEGMENTERS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vis_steer_lens.toy.renderer import concepts_in_text
from vis_steer_lens.toy.world import CONCEPT_CATEGORY, IMAGE_SIZE, OBJECT_CATEGORIES, Scene


class ToySegmenterError(ValueError):
    """The toy segmenter was given images whose scenes it cannot know."""


def named_masks(scene: Scene, text: str) -> list[np.ndarray]:
    """Masks ``[64, 64]`` of the objects of ``scene`` that ``text`` names, one per object.

    An object is named when the text names at least one object concept (shape, colour, texture,
    size, position) and, in every object category the text names, one of the named values is the
    object's ("cyan" names every cyan object; "large cyan" only the large ones; "cyan, yellow" both
    colours). A text naming only a background names the background's pixels (the pixels no object
    covers) when it is the scene's background. A text naming nothing ("blank") names nothing.
    """
    named: dict[str, set[str]] = {}
    for concept in concepts_in_text(text):
        named.setdefault(CONCEPT_CATEGORY[concept], set()).add(concept)
    object_named = {c: v for c, v in named.items() if c in OBJECT_CATEGORIES}
    if object_named:
        return [
            obj.pixel_mask()
            for obj in scene.objects
            if all(obj.attributes()[category] in values for category, values in object_named.items())
        ]
    if scene.background in named.get("background", set()):
        covered = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
        for obj in scene.objects:
            covered |= obj.pixel_mask()
        return [~covered]
    return []


class ToySegmenter:
    """Segments toy images exactly: the pixels of the objects a text names (:func:`named_masks`).

    The images must come from a source that knows their scenes (``ToyImages``, the toy world's
    mined images): the scorer passes that source and the image ids.
    """

    name = "toy"

    def __call__(
        self, images: Sequence[Any], text: str, *, source: Any = None, image_ids: Sequence[int] | None = None
    ) -> list[list[np.ndarray]]:
        if source is None or not hasattr(source, "scene") or image_ids is None:
            raise ToySegmenterError(
                "The toy segmenter needs the images' toy source and ids (a ToyImages with .scene); got "
                f"source={type(source).__name__}. Mine toy images (ToyImages) or use another segmenter."
            )
        return [named_masks(source.scene(int(i)), text) for i in image_ids]


__all__ = ["ToySegmenter", "ToySegmenterError", "named_masks"]
