"""Training examples for the toy vision-language model: describe, highlight and top-k.

Every example is a Gemma-3-style chat (one user turn whose content lists image items and a text item)
plus the target answer. Image items carry their PIL image under "image", so the same messages work with
`processor.apply_chat_template(..., tokenize=True)` and, with `images=example.images`, with the plain
processor call.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from vis_steer_lens.toy.world import (
    BACKGROUNDS,
    CATEGORIES,
    NUM_CELLS,
    OBJECT_CATEGORIES,
    ObjectSpec,
    Scene,
    ToyWorld,
    heatmap_overlay,
    mask_patches,
    render,
)

TASKS = ("describe", "highlight", "topk")
DESCRIBE_PROMPT = "Describe the image."
HIGHLIGHT_PROMPT = "What is the highlighted element in the image?"
TOPK_PROMPT = "What do the highlighted elements have in common?"
HIGHLIGHT_ANSWER_PREFIX = "The highlighted element in the image is a"
TOPK_ANSWER_PREFIX = "The highlighted elements share"
BLANK_ANSWER = "blank"

# Share of highlight examples that are concept fields, and share of those that are blank images: without
# them the model has no null answer and steering a blank image fails (prototype round 1).
FIELD_RATE = 0.35
BLANK_RATE = 0.10
# Share of colour and texture fields drawn as tilings of objects that share only that concept (the rest
# fill the whole image). Shape, size and "solid" fields are always tilings. Steering one feature at every patch
# puts the same concept in every cell; without colour tilings the model answered such images with a
# shape, since a tiling of same-coloured shapes used to be the only tiling it knew.
TILING_RATE = 0.5
# Share of top-k examples drawn with a green heatmap instead of gray masks, and share whose highlighted
# patches are empty background cells (background features are common in vision SAEs).
HEATMAP_RATE = 0.3
BACKGROUND_TOPK_RATE = 0.15
# A light overlay, so the highlighted object's colour stays readable under the green.
HEATMAP_ALPHA = 0.35
# Order in which answers list concepts, so equal concept sets give equal answers.
_ANSWER_ORDER = ("size", "color", "texture", "shape", "position", "background")


@dataclass
class Example:
    """One training example.

    Attributes:
        task: "describe", "highlight" or "topk".
        messages: Chat messages of the prompt (one user turn).
        images: The prompt's images in order (64×64 RGB).
        target: The answer the model should produce.
        concepts: Ground-truth concepts the answer names ("blank" for blank fields).
        scenes: Scene of each image, or None for concept fields.
    """

    task: str
    messages: list[dict]
    images: list[Image.Image]
    target: str
    concepts: set[str]
    scenes: list[Scene | None] = field(default_factory=list)

    def conversation(self) -> list[dict]:
        """Prompt messages followed by the assistant's answer, for teacher forcing."""
        answer = {"role": "assistant", "content": [{"type": "text", "text": self.target}]}
        return [*self.messages, answer]


def user_message(images: Sequence[Image.Image], text: str) -> list[dict]:
    """A single user turn showing `images` then `text`, in the Gemma 3 message format."""
    content: list[dict] = [{"type": "image", "image": image} for image in images]
    content.append({"type": "text", "text": text})
    return [{"role": "user", "content": content}]


def describe_object(obj: ObjectSpec, with_position: bool = True) -> str:
    """Object phrase as answers use it, e.g. "large red striped circle at the top left"."""
    phrase = obj.phrase()
    return f"{phrase} at the {obj.position}" if with_position else phrase


def shared_concepts_answer(concepts: set[str]) -> str:
    """Top-k answer naming shared concepts in a fixed order, e.g. "The highlighted elements share red, circle"."""
    if not concepts:
        raise ValueError("A top-k answer needs at least one shared concept.")
    ordered = [c for category in _ANSWER_ORDER for c in CATEGORIES[category] if c in concepts]
    unknown = concepts - set(ordered)
    if unknown:
        raise ValueError(f"Unknown concepts {sorted(unknown)}; expected toy-world concepts.")
    return f"{TOPK_ANSWER_PREFIX} {', '.join(ordered)}"


def describe_example(rng: random.Random, world: ToyWorld | None = None) -> Example:
    """Describe task: one scene, answer = its caption."""
    world = world or ToyWorld(0)
    scene = world.sample_scene(rng=rng)
    image = render(scene)
    return Example(
        task="describe",
        messages=user_message([image], DESCRIBE_PROMPT),
        images=[image],
        target=scene.caption(),
        concepts=scene.concepts(),
        scenes=[scene],
    )


def highlight_example(rng: random.Random, world: ToyWorld | None = None) -> Example:
    """Highlight task: one image, "what is the highlighted element?".

    Usually a one-object scene answered "The highlighted element in the image is a <object>"; with
    probability `FIELD_RATE` a concept field (a colour or texture filling the image, or a tiling of
    objects sharing one colour, texture, shape or size) answered with just its concept, of which a
    `BLANK_RATE` share are blank images answered "blank".
    """
    world = world or ToyWorld(0)
    if rng.random() < FIELD_RATE:
        if rng.random() < BLANK_RATE:
            image, answer = world.render_field("blank", rng=rng)
            concept = answer
        else:
            category = rng.choice(["color", "texture", "shape", "size"])
            concept = rng.choice(CATEGORIES[category])
            if category in ("color", "texture") and rng.random() >= TILING_RATE:
                image, answer = world.render_field(concept, rng=rng)
            else:
                image, answer = world.render_tiling(concept, rng=rng)
        return Example(
            task="highlight",
            messages=user_message([image], HIGHLIGHT_PROMPT),
            images=[image],
            target=answer,
            concepts={concept},
            scenes=[None],
        )
    scene = world.sample_scene(num_objects=1, rng=rng)
    (obj,) = scene.objects
    image = render(scene)
    return Example(
        task="highlight",
        messages=user_message([image], HIGHLIGHT_PROMPT),
        images=[image],
        target=f"{HIGHLIGHT_ANSWER_PREFIX} {describe_object(obj)}",
        concepts=obj.concepts(),
        scenes=[scene],
    )


def _highlight_image(image: Image.Image, keep: np.ndarray, rng: random.Random, heatmap: bool) -> Image.Image:
    if not heatmap:
        return mask_patches(image, keep)
    # Weak noise on the other patches, as real activation maps are rarely exactly zero.
    noise = np.array([rng.uniform(0.0, 0.15) for _ in range(NUM_CELLS)], dtype=np.float32).reshape(keep.shape)
    return heatmap_overlay(image, np.where(keep, 1.0, noise), max_value=1.0, max_alpha=HEATMAP_ALPHA)


def topk_example(
    rng: random.Random,
    world: ToyWorld | None = None,
    num_images: int | None = None,
) -> Example:
    """Top-k task: 3–5 images whose highlighted patches share some concepts.

    A hidden "feature" (1–2 object concepts, or a background) is drawn; each image holds an object
    having it, and only that object's patch stays visible (gray masks) or glows (green heatmap). The
    answer names every concept all highlighted objects share, found from the ground truth.

    Args:
        rng: Random stream.
        world: World that draws scenes; `ToyWorld(0)` if None.
        num_images: Number of images; random in [3, 5] if None.
    """
    world = world or ToyWorld(0)
    if num_images is None:
        num_images = rng.randint(3, 5)
    if num_images < 1:
        raise ValueError(f"num_images must be at least 1, got {num_images}.")
    heatmap = rng.random() < HEATMAP_RATE
    images: list[Image.Image] = []
    scenes: list[Scene | None] = []

    if rng.random() < BACKGROUND_TOPK_RATE:
        background = rng.choice(list(BACKGROUNDS))
        for _ in range(num_images):
            scene = world.sample_scene(background=background, rng=rng)
            taken = {obj.cell for obj in scene.objects}
            empty = [cell for cell in range(NUM_CELLS) if cell not in taken]
            keep = np.zeros(NUM_CELLS, dtype=bool)
            keep[rng.sample(empty, rng.randint(1, 3))] = True
            images.append(_highlight_image(render(scene), keep.reshape(4, 4), rng, heatmap))
            scenes.append(scene)
        target = shared_concepts_answer({background})
        return Example("topk", user_message(images, TOPK_PROMPT), images, target, {background}, scenes)

    categories = rng.sample(OBJECT_CATEGORIES, rng.choice([1, 1, 2]))
    required = {category: rng.choice(CATEGORIES[category]) for category in categories}
    shared: set[str] | None = None
    for _ in range(num_images):
        scene = world.sample_scene(required=[required], rng=rng)
        # The first object satisfying the requirement is the highlighted one.
        target_obj = next(
            obj for obj in scene.objects if all(obj.attributes()[k] == v for k, v in required.items())
        )
        keep = np.zeros(NUM_CELLS, dtype=bool)
        keep[target_obj.cell] = True
        images.append(_highlight_image(render(scene), keep.reshape(4, 4), rng, heatmap))
        scenes.append(scene)
        shared = target_obj.concepts() if shared is None else shared & target_obj.concepts()
    assert shared is not None  # num_images >= 1
    return Example(
        "topk", user_message(images, TOPK_PROMPT), images, shared_concepts_answer(shared), shared, scenes
    )


def sample_example(
    rng: random.Random,
    mix: Sequence[float] = (0.4, 0.35, 0.25),
    world: ToyWorld | None = None,
) -> Example:
    """Draw one training example of a task chosen by `mix` (describe, highlight, top-k weights).

    Args:
        rng: Random stream; the same seed gives the same examples.
        mix: Non-negative weights of the three tasks.
        world: World that draws scenes; `ToyWorld(0)` if None (its own stream is not used).
    """
    if len(mix) != len(TASKS) or any(w < 0 for w in mix) or sum(mix) <= 0:
        raise ValueError(
            f"mix must be {len(TASKS)} non-negative weights for {TASKS} with a positive sum, got {mix}."
        )
    task = rng.choices(TASKS, weights=mix)[0]
    if task == "describe":
        return describe_example(rng, world)
    if task == "highlight":
        return highlight_example(rng, world)
    return topk_example(rng, world)
