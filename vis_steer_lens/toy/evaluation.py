"""How well the toy model does its three tasks, judged against the world's ground truth.

Caption metric (`caption_accuracy`): each image has a set of (category, concept) pairs, one per attribute
of each object (shape, colour, texture, size, position) plus its background; two objects sharing a value
give one pair. The generated caption is split into object phrases at "and"; each phrase contributes the
pairs of the concepts it names, and a phrase that names an object but no texture means "solid", as the
world's captions leave solid unsaid. Recall and precision are micro-averaged over all images' pairs;
per-category recall is the share of the ground-truth pairs of that category that the caption names.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence

from vis_steer_lens.hooked_vlm import HookedVLM
from vis_steer_lens.toy.renderer import concepts_in_text
from vis_steer_lens.toy.tasks import (
    BLANK_ANSWER,
    DESCRIBE_PROMPT,
    HIGHLIGHT_PROMPT,
    TOPK_PROMPT,
    topk_example,
)
from vis_steer_lens.toy.world import CATEGORIES, CONCEPT_CATEGORY, OBJECT_CATEGORIES, Scene, ToyWorld, render

Pair = tuple[str, str]


def _default_vlm(vlm: HookedVLM | None) -> HookedVLM:
    if vlm is not None:
        return vlm
    from vis_steer_lens.toy.loading import load

    return load().vlm


def _check_counts(n: int, batch_size: int, max_new_tokens: int) -> None:
    for name, value in {"n": n, "batch_size": batch_size, "max_new_tokens": max_new_tokens}.items():
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}.")


def _generate(
    vlm: HookedVLM, images: Sequence, instruction: str, batch_size: int, max_new_tokens: int
) -> list[str]:
    """Greedy answers for each row of `images`, `batch_size` rows at a time."""
    answers: list[str] = []
    for start in range(0, len(images), batch_size):
        chunk = list(images[start : start + batch_size])
        answers += vlm.generate_text(chunk, instruction, max_new_tokens=max_new_tokens)
    return answers


def scene_pairs(scene: Scene) -> set[Pair]:
    """Ground-truth (category, concept) pairs of a scene: every object attribute plus the background."""
    pairs = {("background", scene.background)}
    for obj in scene.objects:
        pairs |= set(obj.attributes().items())
    return pairs


def caption_pairs(caption: str) -> set[Pair]:
    """(category, concept) pairs a caption asserts; an object phrase without a texture asserts "solid"."""
    pairs: set[Pair] = set()
    for phrase in re.split(r"\band\b", caption.lower()):
        concepts = concepts_in_text(phrase)
        categories = {CONCEPT_CATEGORY[c] for c in concepts}
        pairs |= {(CONCEPT_CATEGORY[c], c) for c in concepts}
        # Only a phrase that names an object (not just "on a black background") implies a texture.
        if categories & {"shape", "color", "size"} and "texture" not in categories:
            pairs.add(("texture", "solid"))
    return pairs


def caption_scores(scenes: Sequence[Scene], captions: Sequence[str]) -> dict[str, float]:
    """Micro recall / precision of captions against scenes, and recall per category.

    Returns:
        {"recall", "precision", "n_images", "exact", <category>: recall for each of `CATEGORIES`}; "exact"
        is the share of captions whose pairs equal the ground truth.
    """
    if len(scenes) != len(captions):
        raise ValueError(f"Got {len(scenes)} scenes but {len(captions)} captions.")
    if not scenes:
        raise ValueError("Need at least one scene.")
    hits: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    predicted = correct = exact = 0
    for scene, caption in zip(scenes, captions, strict=True):
        truth, named = scene_pairs(scene), caption_pairs(caption)
        predicted += len(named)
        correct += len(truth & named)
        exact += truth == named
        for category, concept in truth:
            totals[category] += 1
            hits[category] += (category, concept) in named
    result = {
        "recall": correct / sum(totals.values()),
        "precision": correct / predicted if predicted else 0.0,
        "exact": exact / len(scenes),
        "n_images": float(len(scenes)),
    }
    result.update({category: hits[category] / totals[category] for category in CATEGORIES})
    return result


def caption_accuracy(
    vlm: HookedVLM | None = None,
    n_images: int = 200,
    seed: int = 1,
    batch_size: int = 50,
    max_new_tokens: int = 40,
    return_captions: bool = False,
) -> dict:
    """Greedy "Describe the image." captions of fresh world scenes, scored against their ground truth.

    Args:
        vlm: A HookedVLM with its processor; the shipped toy model if None.
        n_images: Scenes to caption (1–2 objects each, as in training).
        seed: Seed of the scenes (an evaluation stream, separate from the training streams).
        batch_size: Prompts per `generate` call.
        max_new_tokens: Decoding budget; 40 fits a two-object caption with room to spare.
        return_captions: Also return the captions and scenes under "captions" / "scenes".

    Returns:
        See `caption_scores`: overall "recall", "precision", "exact" and a recall per category (shape,
        color, texture, size, position, background).
    """
    _check_counts(n_images, batch_size, max_new_tokens)
    vlm = _default_vlm(vlm)
    world = ToyWorld(seed)
    rng = random.Random(f"caption-eval-{seed}")
    scenes = [world.sample_scene(rng=rng) for _ in range(n_images)]
    captions = _generate(vlm, [render(s) for s in scenes], DESCRIBE_PROMPT, batch_size, max_new_tokens)
    result: dict = caption_scores(scenes, captions)
    if return_captions:
        result["captions"], result["scenes"] = captions, scenes
    return result


def highlight_accuracy(
    vlm: HookedVLM | None = None,
    n_images: int = 100,
    seed: int = 1,
    batch_size: int = 50,
    max_new_tokens: int = 20,
) -> dict[str, float]:
    """The highlight question on single-object scenes and on concept fields.

    An object answer is correct when it names the object's colour and shape; a field answer when it names
    the field's concept ("blank" for empty images, which must not name any concept).

    Returns:
        {"object": share correct, "color": colour named, "shape": shape named, "field": share of
        `n_images` concept fields (colours, textures, shapes, blanks) answered correctly}.
    """
    _check_counts(n_images, batch_size, max_new_tokens)
    vlm = _default_vlm(vlm)
    world = ToyWorld(seed)
    rng = random.Random(f"highlight-eval-{seed}")
    objects = [world.sample_scene(num_objects=1, rng=rng).objects[0] for _ in range(n_images)]
    backgrounds = [rng.choice(CATEGORIES["background"]) for _ in objects]
    images = [render(Scene((obj,), bg)) for obj, bg in zip(objects, backgrounds, strict=True)]
    answers = _generate(vlm, images, HIGHLIGHT_PROMPT, batch_size, max_new_tokens)
    named = [concepts_in_text(a) for a in answers]
    color = [obj.color in n for obj, n in zip(objects, named, strict=True)]
    shape = [obj.shape in n for obj, n in zip(objects, named, strict=True)]

    field_concepts = [
        rng.choice([BLANK_ANSWER, *CATEGORIES["color"], *CATEGORIES["texture"], *CATEGORIES["shape"]])
        for _ in range(n_images)
    ]
    fields = [world.render_field(c, rng=rng) for c in field_concepts]
    field_answers = _generate(
        vlm, [image for image, _ in fields], HIGHLIGHT_PROMPT, batch_size, max_new_tokens
    )
    field_ok = []
    for (_, concept), answer in zip(fields, field_answers, strict=True):
        if concept == BLANK_ANSWER:
            field_ok.append(BLANK_ANSWER in answer.lower() and not concepts_in_text(answer))
        else:
            field_ok.append(concept in concepts_in_text(answer))
    return {
        "object": sum(c and s for c, s in zip(color, shape, strict=True)) / n_images,
        "color": sum(color) / n_images,
        "shape": sum(shape) / n_images,
        "field": sum(field_ok) / n_images,
    }


def topk_accuracy(
    vlm: HookedVLM | None = None,
    n_examples: int = 100,
    seed: int = 1,
    batch_size: int = 25,
    max_new_tokens: int = 20,
) -> dict[str, float]:
    """The top-k question on fresh top-k prompts (3–5 highlighted images each).

    Returns:
        {"accuracy": share of answers naming every shared concept, "recall": share of shared concepts
        named, "precision": share of named concepts that are shared, and the recall of each object
        category's shared concepts ("shape", "color", ...; NaN-free: categories never shared are omitted)}.
    """
    _check_counts(n_examples, batch_size, max_new_tokens)
    vlm = _default_vlm(vlm)
    world = ToyWorld(seed)
    rng = random.Random(f"topk-eval-{seed}")
    examples = [topk_example(rng, world) for _ in range(n_examples)]
    answers = _generate(vlm, [e.images for e in examples], TOPK_PROMPT, batch_size, max_new_tokens)
    complete = shared_total = shared_hit = named_total = 0
    hits: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for example, answer in zip(examples, answers, strict=True):
        named = concepts_in_text(answer)
        complete += example.concepts <= named
        shared_total += len(example.concepts)
        shared_hit += len(example.concepts & named)
        named_total += len(named)
        for concept in example.concepts:
            totals[CONCEPT_CATEGORY[concept]] += 1
            hits[CONCEPT_CATEGORY[concept]] += concept in named
    result = {
        "accuracy": complete / n_examples,
        "recall": shared_hit / shared_total,
        "precision": shared_hit / named_total if named_total else 0.0,
    }
    result.update({c: hits[c] / totals[c] for c in (*OBJECT_CATEGORIES, "background") if totals[c]})
    return result


__all__ = [
    "caption_accuracy",
    "caption_pairs",
    "caption_scores",
    "highlight_accuracy",
    "scene_pairs",
    "topk_accuracy",
]
