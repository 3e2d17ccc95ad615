"""Turn free text back into toy-world images (the toy world's stand-in for a text-to-image model)."""

from __future__ import annotations

import random
import re

from PIL import Image

from vis_steer_lens.toy.world import CONCEPT_CATEGORY, Scene, ToyWorld, render

# Extra spellings that name a concept. Black and white are never object colours, so on their own
# they can only mean the background.
_ALIASES: dict[str, str] = {
    "black": "black background",
    "white": "white background",
    "middle": "center",
    "centre": "center",
    "centered": "center",
    "stripes": "striped",
    "stripe": "striped",
    "dots": "dotted",
    "dot": "dotted",
    "spotted": "dotted",
    "checkerboard": "checkered",
    "checked": "checkered",
    "checkers": "checkered",
    "plain": "solid",
    "big": "large",
    "tiny": "small",
    "violet": "purple",
    "magenta": "pink",
    "crosses": "cross",
    "squares": "square",
    "circles": "circle",
    "rings": "ring",
    "triangles": "triangle",
}


def _normalise_words(text: str) -> list[str]:
    """Lower-case words with punctuation dropped and simple plurals reduced ("circles" → "circle")."""
    words = re.findall(r"[a-z]+", text.lower())
    out = []
    for word in words:
        word = _ALIASES.get(word, word)
        if word not in CONCEPT_CATEGORY and word.endswith("s") and word[:-1] in CONCEPT_CATEGORY:
            word = word[:-1]
        # Aliases may expand to several words ("black" → "black background").
        out.extend(word.split())
    return out


def _phrases() -> list[tuple[tuple[str, ...], str]]:
    """Every concept (and multi-word alias) as a word tuple, longest first so "top left" beats "left"."""
    phrases = {tuple(concept.split()): concept for concept in CONCEPT_CATEGORY}
    phrases[("upper", "left")] = "top left"
    phrases[("upper", "right")] = "top right"
    phrases[("lower", "left")] = "bottom left"
    phrases[("lower", "right")] = "bottom right"
    phrases[("left", "top")] = "top left"
    phrases[("right", "top")] = "top right"
    phrases[("left", "bottom")] = "bottom left"
    phrases[("right", "bottom")] = "bottom right"
    return sorted(phrases.items(), key=lambda item: -len(item[0]))


_PHRASES = _phrases()


def concepts_in_order(text: str) -> list[str]:
    """Concept words found in free text, in order of first mention, without repeats.

    Robust to case, punctuation, plurals ("circles"), a few synonyms ("stripes", "centre") and
    multi-word concepts ("top left", "black background"). "black"/"white" alone mean the background.
    """
    words = _normalise_words(text)
    found: list[str] = []
    index = 0
    while index < len(words):
        for phrase, concept in _PHRASES:
            if tuple(words[index : index + len(phrase)]) == phrase:
                if concept not in found:
                    found.append(concept)
                index += len(phrase)
                break
        else:
            index += 1
    return found


def concepts_in_text(text: str) -> set[str]:
    """Set of toy-world concepts named in free text; see `concepts_in_order`."""
    return set(concepts_in_order(text))


class ToyRenderer:
    """Draw toy-world images that show the concepts named in a text.

    The first-mentioned value of each object category goes to one main object; a second value of a
    category (e.g. "red and blue") goes to a second object. Everything unsaid is random.

    Args:
        world: The world whose generator draws the scenes.
    """

    def __init__(self, world: ToyWorld | None = None) -> None:
        self.world = world or ToyWorld(0)

    def plan(self, text: str) -> tuple[list[dict[str, str]], str | None]:
        """Required objects and background for a text.

        Returns:
            (required, background): one attribute dict per required object (empty list if the text names
            no object concept) and the named background or None.
        """
        required: list[dict[str, str]] = []
        background = None
        for concept in concepts_in_order(text):
            category = CONCEPT_CATEGORY[concept]
            if category == "background":
                background = background or concept
                continue
            for attributes in required:
                if category not in attributes:
                    attributes[category] = concept
                    break
            else:
                if len(required) < self.world.max_objects:
                    required.append({category: concept})
        return required, background

    def scenes(self, text: str, n: int, seed: int | None = 0) -> list[Scene]:
        """The scenes `__call__` would render, for checking against ground truth."""
        if n < 0:
            raise ValueError(f"n must be non-negative, got {n}.")
        rng = random.Random(seed)
        required, background = self.plan(text)
        return [self.world.sample_scene(required=required, background=background, rng=rng) for _ in range(n)]

    def __call__(self, text: str, n: int, seed: int | None = 0) -> list[Image.Image]:
        """Draw `n` images containing an object with every concept named in `text`.

        Args:
            text: Any free text, e.g. "The highlighted element in the image is a red striped circle".
            n: Number of images.
            seed: Seed of this call's random stream (same seed, same images); None for fresh randomness.

        Returns:
            `n` 64×64 RGB PIL images.
        """
        return [render(scene) for scene in self.scenes(text, n, seed)]
