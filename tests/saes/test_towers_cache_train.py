"""A vision-only tower with registers (DINOv2 with registers, tiny) through the training path:
cache its patch tokens, train a grid on them, mine with one of the SAEs. Its 1 + R prefix tokens
(class token and registers) stay out of every patch statistic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sae_lens import SAE

from vis_steer_lens.activations import image_processor_of, tower_inputs
from vis_steer_lens.mining import mine_top_activations
from vis_steer_lens.saes.cache import cache_activations
from vis_steer_lens.saes.grid import train_sae_grid
from vis_steer_lens.testing import tiny_vit
from vis_steer_lens.toy import ToyImages

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def vit():
    return tiny_vit("dinov2_with_registers")


def test_cache_train_and_mine_leave_the_class_token_and_registers_out(vit, tmp_path):
    images = ToyImages(seed=5, n=24)
    n_prefix = vit.cfg.n_prefix_tokens
    assert n_prefix == 1 + vit.cfg.n_register_tokens and vit.cfg.n_register_tokens >= 1
    cache = cache_activations(
        vit, [HOOK], images, tmp_path / "activations", images_per_shard=8, progress=False
    )

    # The cached rows are exactly each image's patch tokens, prefix tokens dropped.
    pixels, _ = tower_inputs(vit, [images[i] for i in range(8)], image_processor_of(vit))
    _, resid = vit.run_with_cache(pixels, names_filter=HOOK)
    expected = resid[HOOK][:, n_prefix:].reshape(-1, vit.cfg.d_model)
    assert cache.n_rows == 24 * (resid[HOOK].shape[1] - n_prefix)
    np.testing.assert_allclose(cache.rows(HOOK, 0), expected.numpy(), atol=1e-6)

    saes = train_sae_grid(
        vit,
        HOOK,
        tmp_path / "saes",
        widths=[16],
        ks=[2, 4],
        architecture="topk",
        cache=cache,
        batch_size=64,
        training_tokens=256,
        n_eval_images=4,
        n_loss_images=0,
        progress=False,
    )
    assert sorted(saes) == ["topk-w16-k2", "topk-w16-k4"]
    sae = SAE.load_from_disk(str(tmp_path / "saes" / "topk-w16-k4"))
    report = sae.cfg.metadata.training_report
    assert report["mean_l0"] == pytest.approx(4.0) and 0 <= report["dead_fraction"] <= 1
    assert "language model" in report["loss_skipped"]  # a tower alone has no loss to recover

    mined = mine_top_activations(
        vit, sae, images, k=3, batch_size=8, out_dir=tmp_path / "mined", progress=False
    )
    grid = mined.grid_size
    assert grid * grid == resid[HOOK].shape[1] - n_prefix
    # The strongest image's map equals the SAE on that image's patch tokens alone.
    feature = int(mined.stats["max_act"].idxmax())
    image_id, score, amap = mined.top_images(feature)[0]
    pixels, _ = tower_inputs(vit, [images[int(image_id)]], image_processor_of(vit))
    _, resid = vit.run_with_cache(pixels, names_filter=HOOK)
    codes = sae.encode(resid[HOOK][0, n_prefix:])[:, feature]
    torch.testing.assert_close(torch.as_tensor(amap).float().flatten(), codes.float(), atol=1e-4, rtol=1e-4)
