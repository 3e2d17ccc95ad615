"""A grid of SAEs trained in one pass over cached activations: one read, SAELens folders, reports, resume."""

from __future__ import annotations

import json

import pytest
import torch
from sae_lens import SAE, JumpReLUSAE, TopKSAE

from vis_steer_lens import load_sae, toy
from vis_steer_lens.distributed import World
from vis_steer_lens.hook_names import UnknownHookNameError
from vis_steer_lens.image_sources import ListImages
from vis_steer_lens.saes import grid as grid_module
from vis_steer_lens.saes.cache import ActivationCacheError, cache_activations
from vis_steer_lens.saes.grid import GridSettingsError, parse_int_list, train_sae_grid
from vis_steer_lens.toy import ToyImages

HOOK = "blocks.2.hook_resid_post"
#: 40 images x 16 patches; the first 8 held out: 512 training rows = 4 batches of 128.
GRID = dict(
    widths=[32, 64],
    ks=[4, 8],
    batch_size=128,
    training_tokens=512,
    n_eval_images=8,
    n_loss_images=2,
    progress=False,
)


@pytest.fixture(scope="module")
def vlm():
    return toy.load().vlm


@pytest.fixture(scope="module")
def cache(vlm, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "activations"
    return cache_activations(vlm, [HOOK], ToyImages(seed=3, n=40), out, images_per_shard=10, progress=False)


@pytest.fixture(scope="module")
def topk_grid(vlm, cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("saes")
    stats = {}
    saes = train_sae_grid(vlm, HOOK, out, architecture="topk", cache=cache, stats=stats, **GRID)
    return out, saes, stats


def test_the_grid_trains_in_one_read_of_the_cache(cache, topk_grid):
    out, saes, stats = topk_grid
    assert sorted(saes) == ["topk-w32-k4", "topk-w32-k8", "topk-w64-k4", "topk-w64-k8"]
    provider = stats["provider"]
    assert provider.training_rows() == 512
    # Every training row read once, for all four SAEs: the held-out shard (images 0..9) is read
    # only from its rows past image 8, and no shard twice.
    assert provider.rows_read == 512 and provider.shard_reads == 4
    for name in saes:
        assert json.loads((out / name / "cfg.json").read_text())["metadata"]["training_report"]


def test_each_folder_loads_with_plain_sae_lens_and_load_sae(vlm, topk_grid):
    out, saes, _ = topk_grid
    for name, sae in saes.items():
        plain = SAE.load_from_disk(str(out / name))
        assert isinstance(plain, TopKSAE) and plain.cfg.d_sae == int(name.split("-w")[1].split("-")[0])
        ours = load_sae(str(out / name), model=vlm)
        meta = ours.cfg.metadata
        assert meta.hook_name == HOOK and meta.model_name == vlm.vision.cfg.model_name
        assert meta.tower_fingerprint == vlm.vision.tower_fingerprint() and meta.token_selection == "patches"
        torch.testing.assert_close(plain.W_dec, sae.W_dec)


def test_reports_hold_sane_figures(topk_grid):
    _, saes, _ = topk_grid
    for name, sae in saes.items():
        report = sae.cfg.metadata.training_report
        k = int(name.rsplit("-k", 1)[1])
        assert report["mean_l0"] == pytest.approx(k)  # TopK: exactly k per token
        assert 0.0 <= report["dead_fraction"] <= 1.0 and 0.0 <= report["dense_fraction"] <= 1.0
        assert report["n_rows"] == 8 * 16  # the held-out images' patches
        assert -1.0 < report["explained_variance"] <= 1.0
        # The description's loss is lowest clean and highest with the patches zeroed.
        assert report["loss_clean"] < report["loss_zero_ablated"]
        assert report["loss_recovered"] == pytest.approx(
            (report["loss_zero_ablated"] - report["loss_spliced"])
            / (report["loss_zero_ablated"] - report["loss_clean"])
        )
        assert report["n_loss_images"] == 2 and report["n_loss_tokens"] > 0


@pytest.mark.parametrize("architecture", ["batchtopk", "matryoshka"])
def test_batch_topk_saves_the_jumprelu_form_with_its_threshold(vlm, cache, architecture, tmp_path):
    saes = train_sae_grid(
        vlm,
        HOOK,
        tmp_path,
        architecture=architecture,
        cache=cache,
        **{**GRID, "widths": [32], "ks": [4], "n_loss_images": 0},
    )
    sae = SAE.load_from_disk(str(tmp_path / f"{architecture}-w32-k4"))
    assert isinstance(sae, JumpReLUSAE)
    threshold = saes[f"{architecture}-w32-k4"].cfg.metadata.inference_threshold
    assert threshold > 0 and torch.allclose(sae.threshold, torch.full_like(sae.threshold, threshold))


def test_a_killed_training_resumes_to_the_same_saes(vlm, cache, topk_grid, tmp_path, monkeypatch):
    real_step = grid_module._CheckpointingTrainer._checkpoint_if_needed
    steps = {"n": 0}

    def dies_after_three_steps(self):
        real_step(self)
        steps["n"] += 1
        if steps["n"] == 3:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(grid_module._CheckpointingTrainer, "_checkpoint_if_needed", dies_after_three_steps)
    settings = {**GRID, "n_loss_images": 0}  # the loss is measured after training; not needed here
    with pytest.raises(KeyboardInterrupt):
        train_sae_grid(vlm, HOOK, tmp_path, architecture="topk", cache=cache, checkpoint_every=2, **settings)
    assert (tmp_path / ".grid-checkpoint" / "all" / "step-2" / "topk-w32-k4").is_dir()
    monkeypatch.setattr(grid_module._CheckpointingTrainer, "_checkpoint_if_needed", real_step)
    resumed = train_sae_grid(
        vlm, HOOK, tmp_path, architecture="topk", cache=cache, checkpoint_every=2, **GRID
    )
    _, uninterrupted, _ = topk_grid
    for name, sae in resumed.items():
        torch.testing.assert_close(sae.W_enc, uninterrupted[name].W_enc)
        torch.testing.assert_close(sae.W_dec, uninterrupted[name].W_dec)
    assert not (tmp_path / ".grid-checkpoint" / "all").exists()  # cleaned up once saved


def test_ranks_split_the_grid_and_train_the_same_saes(vlm, cache, topk_grid, tmp_path, monkeypatch):
    # Two ranks one after the other (the barrier is a no-op between them), rank 1 first so that
    # rank 0's summary sees every folder, as after the real barrier.
    monkeypatch.setattr(grid_module, "barrier", lambda world: None)
    settings = {**GRID, "n_loss_images": 0}
    second = train_sae_grid(vlm, HOOK, tmp_path, cache=cache, world=World(rank=1, size=2), **settings)
    first = train_sae_grid(vlm, HOOK, tmp_path, cache=cache, world=World(rank=0, size=2), **settings)
    assert sorted(first) == ["topk-w32-k4", "topk-w64-k4"] and sorted(second) == [
        "topk-w32-k8",
        "topk-w64-k8",
    ]
    _, one_process, _ = topk_grid
    for name, sae in {**first, **second}.items():
        torch.testing.assert_close(sae.W_dec, one_process[name].W_dec)
    assert len(json.loads((tmp_path / "grid.json").read_text())) == 4


def test_streamed_from_the_tower_each_image_is_read_once(vlm, tmp_path):
    reads: dict[int, int] = {}

    class Counted(ListImages):
        def __getitem__(self, index):
            reads[index] = reads.get(index, 0) + 1
            return super().__getitem__(index)

    images = Counted([ToyImages(seed=4, n=40)[i] for i in range(40)], name="toy-40")
    stats = {}
    saes = train_sae_grid(
        vlm, HOOK, tmp_path, architecture="topk", images=images, stats=stats, **{**GRID, "n_loss_images": 0}
    )
    assert len(saes) == 4
    # The held-out images are read for the report and nothing else; training images once each.
    assert max(reads.values()) == 1 and stats["counter"]["images"] == 32


def test_bad_inputs_are_refused_with_what_to_do(vlm, cache, tmp_path):
    with pytest.raises(GridSettingsError, match="integers >= 1"):
        parse_int_list("256,abc", "--widths")
    with pytest.raises(GridSettingsError, match="integers >= 1"):
        parse_int_list("1.5", "--k")
    with pytest.raises(GridSettingsError, match="k=64 is above width=32"):
        train_sae_grid(vlm, HOOK, tmp_path, cache=cache, **{**GRID, "ks": [64]})
    with pytest.raises(GridSettingsError, match="architecture must be one of"):
        train_sae_grid(vlm, HOOK, tmp_path, cache=cache, architecture="gated", **GRID)
    with pytest.raises(UnknownHookNameError):
        train_sae_grid(vlm, "blocks.7.hook_resid_post", tmp_path, cache=cache, **GRID)
    with pytest.raises(ActivationCacheError, match="not in the activation cache"):
        train_sae_grid(vlm, "blocks.1.hook_resid_post", tmp_path, cache=cache, **GRID)
    with pytest.raises(ActivationCacheError, match="fewer than one batch"):
        train_sae_grid(
            vlm, HOOK, tmp_path, cache=cache, **{**GRID, "batch_size": 4096, "training_tokens": 8192}
        )
    with pytest.raises(ActivationCacheError, match="no manifest.json"):
        train_sae_grid(vlm, HOOK, tmp_path, cache=tmp_path / "missing", **GRID)


def _identity_sae(d: int, hook: str):
    """A ReLU SAE whose reconstruction is its input exactly: relu(x) - relu(-x) = x."""
    from sae_lens import StandardSAE, StandardSAEConfig

    sae = StandardSAE(StandardSAEConfig(d_in=d, d_sae=2 * d))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    sae.cfg.metadata.hook_name = hook
    return sae


@pytest.mark.parametrize("family", ["gemma3", "internvl3", "qwen2_5_vl"])
def test_loss_recovered_is_one_for_an_exact_reconstruction(family):
    from vis_steer_lens.saes.grid import describe_images, loss_recovered
    from vis_steer_lens.testing import tiny_vlm

    vlm = tiny_vlm(family, vision_layers=2)
    hook = "blocks.0.hook_resid_post"
    images = [torch.randint(0, 256, (3, 28, 28 + 14 * i), dtype=torch.uint8) for i in range(2)]
    described = describe_images(vlm, images, max_new_tokens=6)
    exact = loss_recovered(vlm, _identity_sae(vlm.vision.hook_width(hook), hook), hook, described)
    assert exact["loss_spliced"] == pytest.approx(exact["loss_clean"], abs=1e-4)
    assert exact["loss_zero_ablated"] != pytest.approx(exact["loss_clean"], abs=1e-4)
    assert exact["loss_recovered"] == pytest.approx(1.0, abs=1e-3)
    assert exact["n_loss_images"] == 2 and exact["n_loss_tokens"] > 0
