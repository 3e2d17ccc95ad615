import math

import pandas as pd
import pytest
import torch
from sae_lens import SAE, JumpReLUSAE, StandardSAE, TopKSAE, TopKSAEConfig

from vis_steer_lens.saes import (
    ActivationStreamError,
    rebatch_activations,
    sae_quality,
    train_sae_on_activations,
    vision_sae_metadata,
)

D_IN, N_TRUE = 16, 64


def _ground_truth(seed: int = 0) -> torch.Tensor:
    directions = torch.randn(N_TRUE, D_IN, generator=torch.Generator().manual_seed(seed))
    return directions / directions.norm(dim=-1, keepdim=True)


def _sparse_samples(directions: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """[n, D_IN]: each row a positive combination of ~2.5 of the ground-truth directions."""
    active = torch.rand(n, N_TRUE, generator=generator) < 2.5 / N_TRUE
    scale = torch.rand(n, N_TRUE, generator=generator) * 2 + 0.5
    return (active * scale) @ directions


def _pca_explained_variance(x: torch.Tensor, rank: int) -> float:
    centered = x - x.mean(0)
    singular = torch.linalg.svdvals(centered)
    return float(singular[:rank].pow(2).sum() / singular.pow(2).sum())


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    # Tiny matrices train several times faster on one thread, above all on a busy 2-core machine.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def trained_topk(single_thread):
    directions = _ground_truth()
    generator = torch.Generator().manual_seed(1)
    # Items of varying size, like the patch tokens of different images.
    items = [_sparse_samples(directions, 500 + 37 * i, generator) for i in range(40)]
    metadata = vision_sae_metadata("blocks.2.hook_resid_post", "toy/vision", image_size=64, context_size=16)
    sae, log = train_sae_on_activations(
        items,
        D_IN,
        architecture="topk",
        d_sae=64,
        k=4,
        total_training_samples=400_000,
        batch_size=512,
        lr=3e-3,
        metadata=metadata,
        log_every=100,
    )
    held_out = _sparse_samples(directions, 4000, torch.Generator().manual_seed(2))
    return sae, log, held_out, metadata


def test_topk_sae_learns_sparse_structure(trained_topk):
    sae, _, held_out, _ = trained_topk
    assert isinstance(sae, TopKSAE) and sae.cfg.k == 4
    quality = sae_quality(sae, held_out)
    # A rank-4 linear code (PCA) is the dense baseline with as many numbers per row.
    baseline = _pca_explained_variance(held_out, rank=4)
    assert quality["explained_variance"] > 0.8
    assert quality["explained_variance"] > baseline + 0.2
    assert 3.0 <= quality["mean_l0"] <= 4.0
    assert quality["dead_fraction"] < 0.25


def test_training_log(trained_topk):
    _, log, _, _ = trained_topk
    assert isinstance(log, pd.DataFrame)
    assert log["step"].iloc[0] == 1 and log["step"].iloc[-1] == math.ceil(400_000 / 512)
    assert {"losses/mse_loss", "metrics/explained_variance", "metrics/l0"} <= set(log.columns)
    assert log["losses/mse_loss"].iloc[-1] < log["losses/mse_loss"].iloc[0] / 2


def test_trained_sae_keeps_metadata_and_reloads(trained_topk, tmp_path):
    sae, _, held_out, metadata = trained_topk
    for key, value in metadata.items():
        assert sae.cfg.metadata[key] == value
    sae.save_model(tmp_path)
    loaded = SAE.load_from_disk(tmp_path)
    assert isinstance(loaded, TopKSAE)
    assert loaded.cfg.metadata.hook_name == "blocks.2.hook_resid_post"
    assert loaded.cfg.metadata.context_size == 16
    torch.testing.assert_close(loaded(held_out[:50]), sae(held_out[:50]))


def test_sae_quality_on_a_perfect_and_a_silent_sae():
    x = torch.randn(100, 4)
    identity = TopKSAE(TopKSAEConfig(d_in=4, d_sae=8, k=4, apply_b_dec_to_input=False))
    with torch.no_grad():
        identity.W_enc.zero_()
        identity.W_dec.zero_()
        identity.W_enc[:, :4] = torch.eye(4)
        identity.W_enc[:, 4:] = -torch.eye(4)
        identity.W_dec[:4] = torch.eye(4)
        identity.W_dec[4:] = -torch.eye(4)
        identity.b_dec.zero_()
        identity.b_enc.zero_()
    quality = sae_quality(identity, x, batch_size=7)
    assert quality["explained_variance"] == pytest.approx(1.0, abs=1e-6)
    assert quality["n_rows"] == 100 and quality["dead_fraction"] == 0.0
    with torch.no_grad():
        identity.b_enc.fill_(-1e6)  # nothing fires
    silent = sae_quality(identity, x)
    assert silent["mean_l0"] == 0.0 and silent["dead_fraction"] == 1.0
    assert silent["explained_variance"] < 0.05


@pytest.mark.parametrize(
    ("architecture", "expected"), [("standard", StandardSAE), ("batchtopk", JumpReLUSAE)]
)
def test_other_architectures_train_and_convert(architecture, expected):
    directions = _ground_truth()
    data = _sparse_samples(directions, 20_000, torch.Generator().manual_seed(3))
    sae, log = train_sae_on_activations(
        data,
        D_IN,
        architecture=architecture,
        d_sae=32,
        k=4,
        total_training_samples=40_000,
        batch_size=1000,
        lr=3e-3,
        l1_coefficient=1.0,
        log_every=10,
    )
    assert isinstance(sae, expected)
    assert len(log) >= 4
    assert sae_quality(sae, data)["explained_variance"] > 0.3


def test_rebatch_gives_full_shuffled_batches():
    items = [
        torch.arange(n * 2, dtype=torch.float32).reshape(n, 2) + 1000 * i for i, n in enumerate([3, 10, 7, 1])
    ]
    batches = list(rebatch_activations(items, 2, batch_size=4, shuffle_buffer_batches=2, seed=0))
    assert all(b.shape == (4, 2) for b in batches)
    assert len(batches) == 21 // 4
    rows = torch.cat(batches)
    all_rows = torch.cat(items)
    assert all((all_rows == r).all(-1).any() for r in rows)  # every row came from the input, once
    assert torch.unique(rows, dim=0).shape[0] == rows.shape[0]


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ActivationStreamError, match=r"expected \[n, 16\]"):
        list(rebatch_activations([torch.zeros(5, 8)], 16, batch_size=4))
    with pytest.raises(ActivationStreamError, match="ran out after"):
        train_sae_on_activations(
            iter([torch.randn(300, 4)]), 4, d_sae=8, k=2, total_training_samples=1000, batch_size=100
        )
    with pytest.raises(ValueError, match="needs k"):
        train_sae_on_activations([torch.randn(10, 4)], 4, d_sae=8, total_training_samples=100, batch_size=10)
    with pytest.raises(ValueError, match="Unknown architecture"):
        train_sae_on_activations(
            [torch.randn(10, 4)], 4, architecture="gated", d_sae=8, total_training_samples=100, batch_size=10
        )


@pytest.mark.parametrize("progress", [True, False])
def test_progress_bar_can_be_silenced(progress, capsys):
    data = torch.randn(512, 8, generator=torch.Generator().manual_seed(0))
    train_sae_on_activations(
        data, 8, d_sae=16, k=2, total_training_samples=256, batch_size=128, progress=progress
    )
    assert ("Training SAE" in capsys.readouterr().err) == progress
