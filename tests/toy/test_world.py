import random
import time

import numpy as np
import pytest
from PIL import Image

from vis_steer_lens.toy.world import (
    BACKGROUNDS,
    CATEGORIES,
    CELL_POSITIONS,
    CELL_SIZE,
    COLORS,
    MASK_FILL,
    POSITION_CELLS,
    SHADED_COLORS,
    ObjectSpec,
    Scene,
    ToyWorld,
    heatmap_overlay,
    mask_patches,
    render,
    render_array,
)


def _cell_slice(cell):
    row, col = divmod(cell, 4)
    return slice(row * CELL_SIZE, (row + 1) * CELL_SIZE), slice(col * CELL_SIZE, (col + 1) * CELL_SIZE)


def test_concept_lists_are_rich_enough_and_disjoint():
    assert len(CATEGORIES["shape"]) == 5
    assert len(CATEGORIES["color"]) >= 8
    assert len([t for t in CATEGORIES["texture"] if t != "solid"]) >= 3
    assert CATEGORIES["size"] == ["small", "large"]
    assert len(CATEGORIES["position"]) == 5
    assert len(CATEGORIES["background"]) == 2
    all_concepts = [c for values in CATEGORIES.values() for c in values]
    assert len(all_concepts) == len(set(all_concepts))


def test_object_colours_are_separated_from_each_other_backgrounds_and_mask_gray():
    palette = {**COLORS, **BACKGROUNDS}
    names = list(palette)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert np.abs(np.subtract(palette[a], palette[b])).sum() >= 60, (a, b)
    used = set(COLORS.values()) | set(SHADED_COLORS.values()) | set(BACKGROUNDS.values())
    assert MASK_FILL not in used


def test_every_cell_has_a_position_word():
    assert len(CELL_POSITIONS) == 16
    assert sorted(c for cells in POSITION_CELLS.values() for c in cells) == list(range(16))
    assert CELL_POSITIONS[0] == "top left" and CELL_POSITIONS[15] == "bottom right"
    assert set(POSITION_CELLS["center"]) == {5, 6, 9, 10}


def test_same_seed_same_images_and_scenes():
    first = ToyWorld(7).sample(20)
    second = ToyWorld(7).sample(20)
    assert [s for _, s in first] == [s for _, s in second]
    for (a, _), (b, _) in zip(first, second, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    other = ToyWorld(8).sample(20)
    assert [s for _, s in first] != [s for _, s in other]


def test_every_object_lies_inside_one_cell_and_gray_never_appears():
    for image, scene in ToyWorld(1).sample(300):
        array = np.asarray(image)
        assert image.size == (64, 64) and image.mode == "RGB"
        assert 1 <= len(scene.objects) <= 2
        background = np.array(BACKGROUNDS[scene.background], dtype=np.uint8)
        not_background = np.any(array != background, axis=-1)
        expected = np.zeros_like(not_background)
        for obj in scene.objects:
            mask = obj.pixel_mask()
            rows, cols = _cell_slice(obj.cell)
            inside = np.zeros_like(mask)
            inside[rows, cols] = True
            assert mask.any() and not (mask & ~inside).any()
            # The drawing is not allowed to touch the cell border, so neighbouring objects never merge.
            cell_mask = mask[rows, cols]
            assert not (
                cell_mask[0].any() or cell_mask[-1].any() or cell_mask[:, 0].any() or cell_mask[:, -1].any()
            )
            expected |= mask
        assert np.array_equal(not_background, expected)
        assert not np.all(array == np.array(MASK_FILL), axis=-1).any()


def test_rendered_pixels_match_ground_truth_colour_and_texture():
    for image, scene in ToyWorld(2).sample(100):
        array = np.asarray(image)
        for obj in scene.objects:
            pixels = {tuple(p) for p in array[obj.pixel_mask()]}
            full, shade = COLORS[obj.color], SHADED_COLORS[obj.color]
            assert full in pixels
            assert pixels <= {full, shade}
            assert (shade in pixels) == (obj.texture != "solid")


@pytest.mark.parametrize("texture", ["striped", "dotted", "checkered"])
def test_every_texture_is_visible_on_every_shape_size_and_offset(texture):
    for shape in CATEGORIES["shape"]:
        for size, offsets in (
            ("large", [(0, 0)]),
            ("small", [(dy, dx) for dy in (-2, 0, 2) for dx in (-2, 1, 2)]),
        ):
            for offset in offsets:
                obj = ObjectSpec(shape, "orange", texture, size, 5, offset)
                array = render_array(Scene((obj,)))[obj.pixel_mask()]
                shaded = np.all(array == SHADED_COLORS["orange"], axis=-1).mean()
                assert 0.15 <= shaded <= 0.65, (shape, size, offset, shaded)


def test_captions_mention_every_concept():
    for _, scene in ToyWorld(3).sample(200):
        caption = scene.caption()
        for concept in scene.concepts() - {"solid"}:
            assert concept in caption, (concept, caption)
        for obj in scene.objects:
            assert f"a {obj.phrase()} at the {obj.position}" in caption
        assert caption.endswith(f"on a {scene.background}")


def test_caption_example_and_canonical_order():
    scene = Scene(
        objects=(
            ObjectSpec("square", "blue", "solid", "small", 15),
            ObjectSpec("circle", "red", "striped", "large", 0),
        ),
        background="black background",
    )
    assert scene.caption() == (
        "a large red striped circle at the top left and a small blue square at the bottom right on a black background"
    )
    assert scene.concepts() == {
        "circle",
        "red",
        "striped",
        "large",
        "top left",
        "square",
        "blue",
        "solid",
        "small",
        "bottom right",
        "black background",
    }
    assert scene.cell_concepts()[0] == {"circle", "red", "striped", "large", "top left", "black background"}
    assert scene.cell_concepts()[3] == {"black background"}


def test_bad_specs_raise_value_errors():
    with pytest.raises(ValueError, match="shape"):
        ObjectSpec("hexagon", "red", "solid", "large", 0)
    with pytest.raises(ValueError, match="color"):
        ObjectSpec("circle", "gray", "solid", "large", 0)
    with pytest.raises(ValueError, match="Cell"):
        ObjectSpec("circle", "red", "solid", "large", 16)
    with pytest.raises(ValueError, match="distinct cells"):
        Scene(
            (ObjectSpec("circle", "red", "solid", "large", 3), ObjectSpec("ring", "red", "solid", "large", 3))
        )
    with pytest.raises(ValueError, match="background"):
        Scene((), background="gray background")


def test_sample_scene_keeps_required_attributes():
    world = ToyWorld(4)
    for _ in range(50):
        scene = world.sample_scene(required=[{"color": "cyan", "position": "center", "shape": "ring"}])
        assert any(o.color == "cyan" and o.shape == "ring" and o.cell in (5, 6, 9, 10) for o in scene.objects)
    with pytest.raises(ValueError, match="Unknown object attributes"):
        world.sample_scene(required=[{"colour": "red"}])


def test_concept_fields():
    world = ToyWorld(5)
    image, answer = world.render_field("red")
    assert answer == "red" and np.all(np.asarray(image) == COLORS["red"])
    image, answer = world.render_field("striped")
    colours = {tuple(p) for p in np.asarray(image).reshape(-1, 3)}
    assert answer == "striped" and len(colours) == 2
    image, answer = world.render_field("triangle")
    array = np.asarray(image)
    assert answer == "triangle"
    # Every cell holds an object (no cell is plain background) and the cells are not all alike.
    cells = [array[_cell_slice(c)] for c in range(16)]
    assert all(len({tuple(p) for p in cell.reshape(-1, 3)}) > 1 for cell in cells)
    assert not all(np.array_equal(cells[0], cell) for cell in cells)
    image, answer = world.render_field("blank")
    assert answer == "blank" and len({tuple(p) for p in np.asarray(image).reshape(-1, 3)}) == 1
    image, answer = world.render_field("white background")
    assert answer == "blank" and np.all(np.asarray(image) == 255)
    image, answer = world.render_field("large")
    assert answer == "large"
    # A solid field is a tiling: a whole image of one colour is the colour's field, not "solid".
    image, answer = world.render_field("solid")
    assert answer == "solid" and len({tuple(p) for p in np.asarray(image).reshape(-1, 3)}) > 2
    for bad in ("top left", "zebra"):
        with pytest.raises(ValueError, match="No concept field"):
            world.render_field(bad)


@pytest.mark.parametrize("concept", ["yellow", "dotted", "ring", "small"])
def test_tilings_share_exactly_one_concept(concept):
    world = ToyWorld(7)
    scene = world.sample_tiling(concept, rng=random.Random(concept))
    assert len(scene.objects) == 16
    shared = set.intersection(*(obj.concepts() - {obj.position} for obj in scene.objects))
    assert shared == {concept}
    image, answer = world.render_tiling(concept, rng=random.Random(concept))
    assert answer == concept and np.array_equal(np.asarray(image), np.asarray(render(scene)))
    for bad in ("top left", "black background", "zebra"):
        with pytest.raises(ValueError, match="No concept tiling"):
            world.sample_tiling(bad)


def test_mask_patches_keeps_only_selected_cells():
    image, scene = ToyWorld(6).sample(1)[0]
    keep = np.zeros((4, 4), dtype=bool)
    keep[1, 2] = True
    masked = np.asarray(mask_patches(image, keep))
    original = np.asarray(image)
    rows, cols = _cell_slice(6)
    assert np.array_equal(masked[rows, cols], original[rows, cols])
    outside = np.ones((64, 64), dtype=bool)
    outside[rows, cols] = False
    assert np.all(masked[outside] == MASK_FILL)
    with pytest.raises(ValueError, match="keep_mask"):
        mask_patches(image, np.ones((3, 3), dtype=bool))
    with pytest.raises(ValueError, match="64"):
        mask_patches(Image.new("RGB", (32, 32)), keep)


def test_heatmap_overlay_turns_active_patches_green():
    image = render(Scene((), background="black background"))
    activations = np.zeros((4, 4))
    activations[0, 0] = 2.0
    array = np.asarray(heatmap_overlay(image, activations))
    assert tuple(array[0, 0]) == (0, 128, 0)  # half-opaque green at the maximum activation
    assert np.all(array[CELL_SIZE:, CELL_SIZE:] == 0)
    with pytest.raises(ValueError, match="activations"):
        heatmap_overlay(image, np.zeros(5))


def test_rendering_is_fast():
    world = ToyWorld(0)
    scenes = [world.sample_scene() for _ in range(500)]
    start = time.perf_counter()
    for scene in scenes:
        render_array(scene)
    per_image = (time.perf_counter() - start) / len(scenes)
    assert per_image < 2e-3
