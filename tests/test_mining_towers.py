"""A vision-only tower (tiny DINOv2 with registers) through what reads a tower: mining, Top-k with a
separate explainer VLM, the dashboard, SAE training; and steering and the hybrid refused."""

from __future__ import annotations

import pytest
import torch
from conftest import build_tiny_toy_vlm

from vis_steer_lens.activations import hook_activations, to_pixel_values
from vis_steer_lens.explain import SteeringExplainer, SteeringInformedTopKExplainer, TopKExplainer
from vis_steer_lens.families import NoLanguageModelError
from vis_steer_lens.mining import mine_top_activations
from vis_steer_lens.saes.training import train_sae
from vis_steer_lens.testing import tiny_sae, tiny_vit
from vis_steer_lens.toy import ToyImages

HOOK = "blocks.1.hook_resid_post"
N_IMAGES = 12


@pytest.fixture(scope="module")
def tower_run():
    vit = tiny_vit("dinov2_with_registers", layers=2)  # class token + 2 registers + 4 x 4 patches
    sae = tiny_sae(vit, HOOK, d_sae=16, k=4)
    images = ToyImages(seed=5, n=N_IMAGES)
    # Feature 0 reads the first register's direction, scaled so that it fires far harder on the
    # registers than on any patch: were the prefix tokens counted, its maxima would be theirs.
    pixel_values = to_pixel_values([images[i] for i in range(N_IMAGES)], vit.image_processor)
    acts = hook_activations(vit, HOOK, pixel_values)  # [images, 3 + 16, 32]
    register = acts[:, 1].mean(0)
    with torch.no_grad():
        sae.W_enc[:, 0] = 10 * register / register.norm()
        sae.b_enc[0] = 0.0
    mined = mine_top_activations(vit, sae, images, k=3, batch_size=5, progress=False)
    return vit, sae, images, acts, mined


def test_mining_leaves_out_class_and_register_tokens(tower_run):
    vit, sae, _, acts, mined = tower_run
    assert mined.n_patches == 16 and mined.grid_size == 4
    with torch.no_grad():
        codes = sae.encode(acts)  # [images, 19, d_sae]
    patch_max = codes[:, 3:].amax(dim=1)  # [images, d_sae]: what mining should rank by ("max")
    all_max = codes.amax(dim=1)
    stats = mined.stats.set_index("feature")
    for feature in range(sae.cfg.d_sae):
        expected = patch_max[:, feature]
        if expected.max() <= 0:
            continue
        top = mined.top_images(feature)
        assert [image for image, _, _ in top] == expected.argsort(descending=True)[:3].tolist()
        assert torch.allclose(torch.tensor([s for _, s, _ in top]), expected.sort(descending=True).values[:3])
        assert all(amap.shape == (4, 4) for _, _, amap in top)
        assert stats.loc[feature, "max_act"] == pytest.approx(float(expected.max()), rel=1e-5)
    # The test can fail: counting the prefix tokens would have changed feature 0's maximum.
    assert (all_max[:, 0] > patch_max[:, 0] + 1).all()


def test_topk_takes_any_vlm_as_explainer(tower_run):
    vit, sae, images, _, mined = tower_run
    with pytest.raises(NoLanguageModelError, match="explainer_model"):
        TopKExplainer(mined)  # the tower alone cannot write explanations
    explainer = build_tiny_toy_vlm()
    frame = TopKExplainer(mined, explainer, k_images=2, prompt="toy", max_new_tokens=4).explain(
        [0, 1], progress=False
    )
    assert frame["feature"].tolist() == [0, 1]
    assert list(frame["image_ids"][0]) == [i for i, s, _ in mined.top_images(0)[:2] if s > 0]


def test_steering_and_hybrid_say_they_need_a_vlm(tower_run):
    vit, sae, _, _, mined = tower_run
    with pytest.raises(NoLanguageModelError, match="needs a vision-language model"):
        SteeringExplainer(vit, sae, coefficient=10.0)
    with pytest.raises(NoLanguageModelError, match="no language model"):
        SteeringInformedTopKExplainer(mined, build_tiny_toy_vlm(), sae=sae)


def test_dashboard_of_a_tower_run(tower_run, tmp_path):
    from vis_steer_lens.dashboard.html import export_dashboard

    *_, mined = tower_run
    mined.save(tmp_path / "run" / "mined")
    index = export_dashboard(tmp_path / "run", tmp_path / "dash")
    assert index.exists() and (tmp_path / "dash" / "data" / "features").is_dir()
    assert any((tmp_path / "dash" / "data" / "features").iterdir())


def test_train_sae_on_the_tower_patches(tower_run):
    vit, *_ = tower_run
    sae, report = train_sae(
        vit,
        HOOK,
        ToyImages(seed=6, n=40),
        architecture="topk",
        d_sae=32,
        k=4,
        total_training_samples=16 * 24,
        batch_size=64,
        image_batch_size=8,
        n_eval_images=4,
        tokens="patches",
        progress=False,
    )
    metadata = sae.cfg.metadata
    assert metadata.model_family == "dinov2_with_registers" and metadata.hook_name == HOOK
    assert metadata.token_selection == "patches"
    assert metadata.tower_fingerprint == vit.tower_fingerprint()
    assert 0.0 < metadata.training_report["mean_l0"] <= 4.0


def test_cli_mines_a_saved_tower_and_refuses_to_steer_it(tmp_path):
    from test_cli import cli_error

    from vis_steer_lens.cli import main
    from vis_steer_lens.testing import tiny_hf_tower

    tower, image_processor = tiny_hf_tower("dinov2_with_registers", layers=2)
    tower.save_pretrained(tmp_path / "tower")
    image_processor.save_pretrained(tmp_path / "tower")
    vit = tiny_vit("dinov2_with_registers", layers=2)  # the same weights (same seed)
    tiny_sae(vit, HOOK, d_sae=16, k=4).save_model(tmp_path / "sae")
    images = ToyImages(seed=1, n=6)
    (tmp_path / "images").mkdir()
    for index in range(len(images)):
        images[index].save(tmp_path / "images" / f"{index}.png")
    model = ["--model", str(tmp_path / "tower"), "--sae", str(tmp_path / "sae"), "--device", "cpu"]
    assert (
        main(
            ["--quiet", "mine", *model, "--images", str(tmp_path / "images"), "--run", str(tmp_path / "run")]
        )
        == 0
    )
    assert (tmp_path / "run" / "mined").is_dir()
    assert main(["--quiet", "dashboard", str(tmp_path / "run"), "--with-model", *model]) == 0
    assert (tmp_path / "run" / "dashboard" / "index.html").is_file()
    message = cli_error(
        main, ["--quiet", "explain", *model, "--coefficient", "10", "--run", str(tmp_path / "run")]
    )
    assert "no language model" in message


def test_mining_a_released_dinov2_at_its_processors_size():
    from vis_steer_lens.testing import random_vit

    vit = random_vit("dinov2-with-registers-base", n_layers=1)  # positions for 518 px, 224-px crops
    assert vit.cfg.image_size == 518 and vit.input_image_size() == 224
    sae = tiny_sae(vit, "blocks.0.hook_resid_post", d_sae=8, k=2)
    mined = mine_top_activations(vit, sae, ToyImages(seed=2, n=3), k=2, batch_size=3, progress=False)
    assert (mined.grid_size, mined.n_patches) == (16, 256)
    assert all(amap.shape == (16, 16) for f in mined.live_features() for _, _, amap in mined.top_images(f))
