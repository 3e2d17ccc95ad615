import numpy as np

from vis_steer_lens.toy.renderer import ToyRenderer, concepts_in_order, concepts_in_text
from vis_steer_lens.toy.world import BACKGROUNDS, COLORS, POSITION_CELLS, SHADED_COLORS, ToyWorld


def test_concepts_from_messy_text():
    assert concepts_in_text("The highlighted element in the image is a red striped circle") == {
        "red",
        "striped",
        "circle",
    }
    assert concepts_in_text("RED, Striped... CIRCLES!!") == {"red", "striped", "circle"}
    assert concepts_in_text("small squares in the Top-Left corner, on a black background.") == {
        "small",
        "square",
        "top left",
        "black background",
    }
    assert concepts_in_text("Upper right; big checkerboard crosses on white") == {
        "top right",
        "large",
        "checkered",
        "cross",
        "white background",
    }
    assert concepts_in_text("stripes and dots in the centre") == {"striped", "dotted", "center"}
    assert concepts_in_text("nothing to see here, left alone") == set()
    assert concepts_in_order("blue ring and a red ring") == ["blue", "ring", "red"]


def test_renderer_draws_the_named_concepts():
    renderer = ToyRenderer(ToyWorld(0))
    text = "The highlighted element in the image is a red striped circle"
    images = renderer(text, n=12, seed=1)
    scenes = renderer.scenes(text, n=12, seed=1)
    assert len(images) == 12
    for image, scene in zip(images, scenes, strict=True):
        array = np.asarray(image)
        matches = [o for o in scene.objects if (o.color, o.texture, o.shape) == ("red", "striped", "circle")]
        assert matches
        # The pixels really show it: full red and half-bright red stripes inside the object.
        pixels = {tuple(p) for p in array[matches[0].pixel_mask()]}
        assert pixels == {COLORS["red"], SHADED_COLORS["red"]}


def test_renderer_honours_background_and_position():
    renderer = ToyRenderer()
    scenes = renderer.scenes("a small cyan ring at the bottom left on a white background", n=10, seed=3)
    for scene, image in zip(
        scenes, renderer("a small cyan ring at the bottom left on white", n=10, seed=3), strict=True
    ):
        assert scene.background == "white background"
        assert np.all(np.asarray(image)[0, 0] == BACKGROUNDS["white background"])
        assert any(
            (o.size, o.color, o.shape) == ("small", "cyan", "ring")
            and o.cell in POSITION_CELLS["bottom left"]
            for o in scene.objects
        )


def test_second_values_go_to_a_second_object():
    required, background = ToyRenderer().plan("red circles and blue squares on black")
    assert required == [{"color": "red", "shape": "circle"}, {"color": "blue", "shape": "square"}]
    assert background == "black background"


def test_renderer_is_deterministic_and_random_without_concepts():
    renderer = ToyRenderer()
    a = renderer("nothing", n=6, seed=5)
    b = renderer("nothing", n=6, seed=5)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b, strict=True))
    scenes = renderer.scenes("", n=30, seed=5)
    assert len({s.objects[0].color for s in scenes}) > 3
    assert len({s.background for s in scenes}) == 2
