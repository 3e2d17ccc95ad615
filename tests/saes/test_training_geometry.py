"""SAE training takes its tokens from the tower's geometry: images of their own sizes on a packed tower,
and patches, prefix tokens or both on a tower with a class token."""

from __future__ import annotations

import itertools

import pytest
import torch
from PIL import Image

from vis_steer_lens import train_sae
from vis_steer_lens.activations import image_token_activations
from vis_steer_lens.saes.training import _activation_stream
from vis_steer_lens.testing import tiny_vlm

SIZES = [(48, 32), (32, 64), (80, 30), (40, 40)]


def _images(n: int):
    gen = torch.Generator().manual_seed(1)
    for w, h in itertools.islice(itertools.cycle(SIZES), n):
        yield Image.fromarray((torch.rand(h, w, 3, generator=gen) * 255).byte().numpy())


def test_packed_tower_trains_on_each_images_own_patches():
    vlm = tiny_vlm("qwen2_5_vl", vision_layers=2)
    hook = "blocks.1.hook_resid_post"
    processor = vlm.processor.image_processor
    images = list(_images(4))
    per_image, geometry = image_token_activations(vlm, hook, images, processor)
    counts = [h * w for h, w in (geometry.grid(i) for i in range(4))]
    assert [a.shape[0] for a in per_image] == counts and len(set(counts)) > 1
    rows = next(_activation_stream(vlm, hook, iter([images]), processor, None, torch.Generator(), None))
    assert rows.shape[0] == sum(counts)
    two = next(_activation_stream(vlm, hook, iter([images]), processor, 2, torch.Generator(), None))
    assert two.shape[0] == 2 * len(images)
    sae, _ = train_sae(
        vlm,
        hook,
        _images(10_000),
        d_sae=16,
        k=4,
        total_training_samples=20_000,
        batch_size=512,
        lr=3e-3,
        image_batch_size=8,
        n_eval_images=4,
        progress=False,
    )
    assert sae.cfg.metadata.token_selection == "patches"
    assert sae.cfg.metadata.training_report["explained_variance"] > 0


@pytest.mark.parametrize("tokens, per_image", [("patches", 16), ("prefix", 1), ("all", 17)])
def test_token_selection_on_a_tower_with_a_class_token(tokens, per_image):
    vlm = tiny_vlm("internvl3", vision_layers=2)
    assert vlm.vision.cfg.n_prefix_tokens == 1 and vlm.vision.cfg.n_patches == 16
    images = list(_images(3))
    rows = next(
        _activation_stream(
            vlm,
            "blocks.0.hook_resid_post",
            iter([images]),
            vlm.processor.image_processor,
            None,
            torch.Generator(),
            None,
            tokens=tokens,
        )
    )
    assert rows.shape == (3 * per_image, vlm.vision.cfg.d_model)


def test_unknown_token_selection_is_refused():
    vlm = tiny_vlm("internvl3", vision_layers=1)
    with pytest.raises(ValueError, match="tokens must be one of"):
        train_sae(
            vlm, "blocks.0.hook_resid_post", _images(8), d_sae=4, k=1, total_training_samples=8, tokens="cls"
        )
