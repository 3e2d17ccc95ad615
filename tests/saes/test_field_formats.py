"""The field's SAE formats load as sae_lens SAEs with identical activations: folders written by the
real dictionary_learning BatchTopK and Matryoshka BatchTopK trainers, and saev's sae.pt files (its
0.1.0 format, the released SAEs', and its current schema with ReLU, TopK and BatchTopK), built with
those projects' own code (vendored beside this file) and no network."""

from __future__ import annotations

import json

import pytest
import torch
from sae_lens import SAE, JumpReLUSAE, StandardSAE, TopKSAE

from vis_steer_lens.saes import get_release, load_sae, load_saev_sae
from vis_steer_lens.saes import loading as loading_module
from vis_steer_lens.saes.loading import SAESourceError

from ._vendored_dictionary_learning.trainers.batch_top_k import BatchTopKTrainer
from ._vendored_dictionary_learning.trainers.matryoshka_batch_top_k import MatryoshkaBatchTopKTrainer
from ._vendored_saev_0_1_0 import config as saev_old_config
from ._vendored_saev_0_1_0 import nn as saev_old
from ._vendored_saev_main import modeling as saev_new

D_IN, D_SAE, K = 16, 64, 4


def _activations(n: int = 256, seed: int = 0) -> torch.Tensor:
    """Anisotropic activations with an offset, so that b_dec, the threshold and the encoder all matter."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, D_IN, generator=gen) * torch.linspace(0.5, 2.0, D_IN) + 0.7


def _train_dictionary_learning(trainer, folder, steps: int):
    """Train a few steps, then write the folder as dictionary_learning's trainSAE does (config.json
    holding {"trainer": trainer.config}, ae.pt the state dict)."""
    for step in range(steps):
        trainer.update(step, _activations(64, seed=step))
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"trainer": trainer.config}))
    torch.save({key: value.cpu() for key, value in trainer.ae.state_dict().items()}, folder / "ae.pt")
    return trainer.ae.eval()


def _dl_trainer(kind: str, threshold_start_step: int):
    common = dict(
        steps=30,
        activation_dim=D_IN,
        dict_size=D_SAE,
        k=K,
        layer=1,
        lm_name="tiny-dinov2_with_registers",
        warmup_steps=2,
        threshold_start_step=threshold_start_step,
        seed=0,
        device="cpu",
        submodule_name="enc_res_out_layer_1",
    )
    if kind == "matryoshka":
        return MatryoshkaBatchTopKTrainer(group_fractions=[0.25, 0.75], **common)
    return BatchTopKTrainer(**common)


@pytest.mark.parametrize("kind", ["batchtopk", "matryoshka"])
@pytest.mark.parametrize("threshold_start_step", [5, 1000], ids=["threshold-learned", "threshold-unset"])
def test_dictionary_learning_batch_topk_folders_load_with_identical_activations(
    tmp_path, kind, threshold_start_step
):
    theirs = _train_dictionary_learning(
        _dl_trainer(kind, threshold_start_step), tmp_path / "trainer_0", steps=12
    )
    assert (float(theirs.threshold) >= 0) == (threshold_start_step == 5)
    sae = load_sae(tmp_path / "trainer_0")
    assert isinstance(sae, JumpReLUSAE)
    meta = sae.cfg.metadata
    assert meta.hook_name == "blocks.1.hook_resid_post" and meta.batch_top_k == K
    assert meta.inference_threshold == (float(theirs.threshold) if threshold_start_step == 5 else None)
    if kind == "matryoshka":
        assert meta.matryoshka_group_sizes == [16, 48]
    x = _activations(200, seed=99)
    with torch.no_grad():
        expected = theirs.encode(x)  # use_threshold=True: their inference
        codes = sae.encode(x)
        assert (expected > 0).any() and (expected == 0).any()
        torch.testing.assert_close(codes, expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(sae.decode(codes), theirs.decode(expected), atol=1e-5, rtol=1e-6)
        # A converted folder is a plain SAELens folder.
        sae.save_model(tmp_path / "converted")
        reloaded = SAE.load_from_disk(str(tmp_path / "converted"))
        torch.testing.assert_close(reloaded.encode(x), expected, atol=1e-6, rtol=0)


def _randomise(module: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(0.3 * torch.randn(param.shape, generator=gen))


def test_saev_0_1_0_checkpoint_loads_with_identical_activations(tmp_path):
    theirs = saev_old.SparseAutoencoder(saev_old_config.SparseAutoencoder(d_vit=D_IN, exp_factor=4))
    _randomise(theirs, seed=1)
    saev_old.dump(str(tmp_path / "sae.pt"), theirs)
    sae = load_saev_sae(tmp_path, hook_name="encoder.layer.1", model_name="tiny-dinov2_with_registers")
    assert isinstance(sae, StandardSAE) and sae.cfg.apply_b_dec_to_input
    assert sae.cfg.metadata.hook_name == "blocks.1.hook_resid_post"
    assert sae.cfg.metadata.model_family == "dinov2_with_registers"
    x = _activations(100, seed=3)
    with torch.no_grad():
        x_hat, f_x, _ = theirs(x)
        assert (f_x > 0).any() and (f_x == 0).any()
        torch.testing.assert_close(sae.encode(x), f_x, atol=1e-6, rtol=0)
        torch.testing.assert_close(sae(x), x_hat, atol=1e-5, rtol=1e-6)

        # saev's normalisation, folded in: our SAE on raw x equals saev on (x - mean) / scale.
        mean, scale = torch.randn(D_IN) * 0.5, 3.0
        folded = load_saev_sae(
            tmp_path,
            hook_name="blocks.1.hook_resid_post",
            model_name="tiny",
            activation_mean=mean,
            activation_scale=scale,
        )
        x_hat_n, f_n, _ = theirs((x - mean) / scale)
        torch.testing.assert_close(folded.encode(x), f_n, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(folded(x), x_hat_n * scale + mean, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("activation", "expected_class"),
    [
        (saev_new.Relu(), StandardSAE),
        (saev_new.TopK(top_k=K), TopKSAE),
        (saev_new.BatchTopK(top_k=K), JumpReLUSAE),
    ],
    ids=["relu", "topk", "batchtopk"],
)
def test_saev_schema_checkpoints_load_with_identical_activations(tmp_path, activation, expected_class):
    theirs = saev_new.SparseAutoencoder(
        saev_new.SparseAutoencoderConfig(d_model=D_IN, d_sae=D_SAE, activation=activation)
    )
    _randomise(theirs, seed=2)
    with torch.no_grad():
        theirs.b_enc.add_(
            1.0
        )  # the k-th largest pre-activation positive: where SAELens' TopK and saev's agree
    x = _activations(100, seed=4)
    if isinstance(activation, saev_new.BatchTopK):
        theirs.train()
        for _ in range(5):  # learn the inference threshold, as its training does
            theirs.activation(theirs.encode(x).h_x)
        assert float(theirs.activation.threshold) > 0
    theirs.eval()
    saev_new.dump(tmp_path / "sae.pt", theirs)
    sae = load_saev_sae(tmp_path, hook_name="blocks.0.hook_resid_post", model_name="tiny-clip", family="clip")
    assert isinstance(sae, expected_class) and not sae.cfg.apply_b_dec_to_input
    assert sae.cfg.metadata.saev_schema == saev_new.SCHEMA_VERSION
    with torch.no_grad():
        out = theirs(x)
        assert (out.f_x > 0).any() and (out.f_x == 0).any()
        codes = sae.encode(x)
        torch.testing.assert_close(codes, out.f_x, atol=1e-6, rtol=0)
        torch.testing.assert_close(sae.decode(codes), out.x_hats[:, -1], atol=1e-5, rtol=1e-6)
        sae.save_model(tmp_path / "converted")
        torch.testing.assert_close(
            SAE.load_from_disk(str(tmp_path / "converted")).encode(x), out.f_x, atol=1e-6, rtol=0
        )


def test_a_local_saev_file_needs_its_hook(tmp_path):
    theirs = saev_old.SparseAutoencoder(saev_old_config.SparseAutoencoder(d_vit=D_IN, exp_factor=2))
    saev_old.dump(str(tmp_path / "sae.pt"), theirs)
    with pytest.raises(SAESourceError, match="load_saev_sae"):
        load_sae(tmp_path)


@pytest.mark.parametrize(
    ("release", "repo_id", "model", "family"),
    [
        (
            "saev-clip-vit-b-16-imagenet1k",
            "osunlp/SAE_CLIP_24K_ViT-B-16_IN1K",
            "openai/clip-vit-base-patch16",
            "clip",
        ),
        (
            "saev-dinov2-vit-b-14-reg-imagenet1k",
            "osunlp/SAE_DINOv2_24K_ViT-B-14_IN1K",
            "facebook/dinov2-with-registers-base",
            "dinov2_with_registers",
        ),
    ],
)
def test_saev_releases_resolve_to_the_converter_and_hook(
    tmp_path, monkeypatch, release, repo_id, model, family
):
    entry = get_release(release)
    assert (entry.repo_id, entry.model, entry.format) == (repo_id, model, "saev")
    requested = []

    def fake_download(repo, folder):  # the hub, replaced by a small saev 0.1.0 file
        requested.append((repo, folder))
        theirs = saev_old.SparseAutoencoder(saev_old_config.SparseAutoencoder(d_vit=D_IN, exp_factor=2))
        saev_old.dump(str(tmp_path / "sae.pt"), theirs)
        return tmp_path

    monkeypatch.setattr(loading_module, "_download_folder", fake_download)
    sae = load_sae(release, "blocks.10.hook_resid_post")
    assert requested == [(repo_id, ".")]
    meta = sae.cfg.metadata
    assert (meta.hook_name, meta.model_name, meta.model_family) == (
        "blocks.10.hook_resid_post",
        model,
        family,
    )
    assert meta.source_format == "saev" and meta.token_selection == "patches"
