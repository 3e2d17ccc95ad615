"""The shipped toy model: it loads offline in seconds, and it really describes the toy world."""

from __future__ import annotations

import time

import pytest

from vis_steer_lens.hooked_vlm import HookedVLM
from vis_steer_lens.toy import ToyWorld
from vis_steer_lens.toy.evaluation import caption_accuracy
from vis_steer_lens.toy.loading import ToyBundle, load, toy_model_path, toy_sae_path

# The bar the shipped model must clear (captions of 200 fresh scenes, greedy decoding).
CAPTION_BAR_OVERALL = 0.90
CAPTION_BAR_PER_CATEGORY = 0.85


@pytest.fixture(scope="module")
def bundle() -> ToyBundle:
    return load()


def test_assets_are_package_data():
    folder = toy_model_path()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json"):
        assert (folder / name).is_file(), name
    # Model and processor only: no optimizer state or checkpoints in the package.
    assert sum(f.stat().st_size for f in folder.iterdir()) < 20_000_000


def test_load_is_fast_and_complete(bundle):
    start = time.perf_counter()
    again = load()
    assert time.perf_counter() - start < 30
    assert isinstance(again.vlm, HookedVLM)
    assert isinstance(bundle.world, ToyWorld)
    assert bundle.processor is bundle.vlm.processor
    assert (bundle.sae is None) == (not toy_sae_path().is_dir())
    assert not bundle.vlm.hf_model.training


def test_shipped_model_describes_an_image(bundle):
    image, scene = bundle.world.sample(1)[0]
    (caption,) = bundle.vlm.generate_text([image], "Describe the image.", max_new_tokens=40)
    assert caption.endswith("background"), caption


def test_shipped_model_meets_caption_bar(bundle):
    """Real check of the shipped weights: caption recall/precision on 200 fresh scenes (~30-60 s on CPU)."""
    scores = caption_accuracy(bundle.vlm, n_images=200)
    assert scores["recall"] >= CAPTION_BAR_OVERALL, scores
    assert scores["precision"] >= CAPTION_BAR_OVERALL, scores
    for category in ("shape", "color", "texture", "size", "position", "background"):
        assert scores[category] >= CAPTION_BAR_PER_CATEGORY, (category, scores)
