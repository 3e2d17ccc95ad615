import random
from collections import Counter

import numpy as np
import pytest

from vis_steer_lens.toy.renderer import concepts_in_text
from vis_steer_lens.toy.tasks import (
    BLANK_ANSWER,
    DESCRIBE_PROMPT,
    HIGHLIGHT_ANSWER_PREFIX,
    HIGHLIGHT_PROMPT,
    TOPK_ANSWER_PREFIX,
    TOPK_PROMPT,
    describe_example,
    highlight_example,
    sample_example,
    shared_concepts_answer,
    topk_example,
)
from vis_steer_lens.toy.world import CONCEPT_CATEGORY, MASK_FILL, render


def _user_text(example):
    (message,) = example.messages
    assert message["role"] == "user"
    images = [item["image"] for item in message["content"] if item["type"] == "image"]
    texts = [item["text"] for item in message["content"] if item["type"] == "text"]
    assert images == example.images and len(texts) == 1
    return texts[0]


def test_same_seed_same_examples():
    a = [sample_example(random.Random(11)) for _ in range(3)]
    b = [sample_example(random.Random(11)) for _ in range(3)]
    assert [(x.task, x.target) for x in a] == [(y.task, y.target) for y in b]
    rng_a, rng_b = random.Random(12), random.Random(12)
    for _ in range(40):
        x, y = sample_example(rng_a), sample_example(rng_b)
        assert (x.task, x.target, x.scenes) == (y.task, y.target, y.scenes)
        assert all(
            np.array_equal(np.asarray(i), np.asarray(j)) for i, j in zip(x.images, y.images, strict=True)
        )


def test_task_mix_and_bad_mix():
    rng = random.Random(0)
    counts = Counter(sample_example(rng).task for _ in range(1000))
    assert abs(counts["describe"] / 1000 - 0.4) < 0.06
    assert abs(counts["highlight"] / 1000 - 0.35) < 0.06
    assert abs(counts["topk"] / 1000 - 0.25) < 0.06
    with pytest.raises(ValueError, match="mix"):
        sample_example(rng, mix=(1, 0))


def test_describe_examples_answer_with_the_caption():
    rng = random.Random(1)
    for _ in range(30):
        example = describe_example(rng)
        assert _user_text(example) == DESCRIBE_PROMPT
        (scene,) = example.scenes
        assert example.target == scene.caption()
        assert np.array_equal(np.asarray(example.images[0]), np.asarray(render(scene)))
        # Captions leave "solid" unsaid; every other concept is named.
        assert concepts_in_text(example.target) == scene.concepts() - {"solid"}


def test_highlight_examples_objects_fields_and_blanks():
    rng = random.Random(2)
    kinds = Counter()
    field_categories = set()
    for _ in range(600):
        example = highlight_example(rng)
        assert _user_text(example) == HIGHLIGHT_PROMPT
        (scene,) = example.scenes
        if example.target == BLANK_ANSWER:
            kinds["blank"] += 1
            assert len({tuple(p) for p in np.asarray(example.images[0]).reshape(-1, 3)}) == 1
        elif scene is None:
            kinds["field"] += 1
            assert example.concepts == {example.target}
            field_categories.add(CONCEPT_CATEGORY[example.target])
        else:
            kinds["object"] += 1
            (obj,) = scene.objects
            assert example.target.startswith(HIGHLIGHT_ANSWER_PREFIX + " ")
            assert concepts_in_text(example.target) == obj.concepts() - {"solid"}
    fields = kinds["field"] + kinds["blank"]
    assert abs(fields / 600 - 0.35) < 0.07
    # Colour, texture, shape and size fields all occur (sizes only as tilings).
    assert field_categories == {"color", "texture", "shape", "size"}
    assert 0.03 < kinds["blank"] / fields < 0.2


def test_topk_examples_mask_all_but_the_highlighted_objects_and_name_shared_concepts():
    rng = random.Random(3)
    for _ in range(60):
        example = topk_example(rng)
        assert _user_text(example) == TOPK_PROMPT
        assert 3 <= len(example.images) <= 5
        assert example.target.startswith(TOPK_ANSWER_PREFIX + " ")
        assert concepts_in_text(example.target) == example.concepts
        assert example.concepts
        for image, scene in zip(example.images, example.scenes, strict=True):
            array = np.asarray(image)
            masked_cells = [
                c
                for c in range(16)
                if np.all(
                    array[(c // 4) * 16 : (c // 4 + 1) * 16, (c % 4) * 16 : (c % 4 + 1) * 16] == MASK_FILL
                )
            ]
            if masked_cells:  # gray-mask variant (otherwise a heatmap)
                visible = [c for c in range(16) if c not in masked_cells]
                assert 1 <= len(visible) <= 3
                background_only = example.concepts <= {"black background", "white background"}
                for cell in visible:
                    obj = scene.object_at(cell)
                    if background_only:
                        assert obj is None
                    else:
                        assert obj is not None and example.concepts <= obj.concepts()


def test_shared_concepts_answer_order_and_errors():
    assert (
        shared_concepts_answer({"circle", "red", "top left"})
        == "The highlighted elements share red, circle, top left"
    )
    with pytest.raises(ValueError):
        shared_concepts_answer(set())
    with pytest.raises(ValueError, match="Unknown"):
        shared_concepts_answer({"zebra"})
