"""The field's SAE formats load as sae_lens SAEs with identical activations: folders written by the
real dictionary_learning BatchTopK and Matryoshka BatchTopK trainers and sae.pt files written by
saev's own ``dump`` (its 0.1.0 format, the released SAEs'), both read from the projects' wheels
(``field_packages``), and saev's current schema (ReLU, TopK, BatchTopK), written here field by field
as its ``dump`` writes it, against activations computed by hand. No network."""

from __future__ import annotations

import json

import pytest
import torch
from sae_lens import SAE, JumpReLUSAE, StandardSAE, TopKSAE

from vis_steer_lens.saes import get_release, load_sae, load_saev_sae
from vis_steer_lens.saes import loading as loading_module
from vis_steer_lens.saes.loading import SAESourceError

from .field_packages import load_modules

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


@pytest.fixture
def saev_old(monkeypatch):
    """saev 0.1.0's ``nn`` and ``config`` modules, from its wheel."""
    return load_modules(monkeypatch, "saev", "nn", "config")


def _saev_old_sae(saev_old, exp_factor: int):
    nn, config = saev_old
    return nn.SparseAutoencoder(config.SparseAutoencoder(d_vit=D_IN, exp_factor=exp_factor))


def _dl_trainer(monkeypatch, kind: str, threshold_start_step: int):
    batch_top_k, matryoshka = load_modules(
        monkeypatch, "dictionary_learning", "trainers.batch_top_k", "trainers.matryoshka_batch_top_k"
    )
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
        return matryoshka.MatryoshkaBatchTopKTrainer(group_fractions=[0.25, 0.75], **common)
    return batch_top_k.BatchTopKTrainer(**common)


@pytest.mark.parametrize("kind", ["batchtopk", "matryoshka"])
@pytest.mark.parametrize("threshold_start_step", [5, 1000], ids=["threshold-learned", "threshold-unset"])
def test_dictionary_learning_batch_topk_folders_load_with_identical_activations(
    tmp_path, monkeypatch, kind, threshold_start_step
):
    theirs = _train_dictionary_learning(
        _dl_trainer(monkeypatch, kind, threshold_start_step), tmp_path / "trainer_0", steps=12
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


def test_saev_0_1_0_checkpoint_loads_with_identical_activations(tmp_path, saev_old):
    theirs = _saev_old_sae(saev_old, exp_factor=4)
    _randomise(theirs, seed=1)
    saev_old[0].dump(str(tmp_path / "sae.pt"), theirs)
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


def _write_saev_schema_5(path, weights: dict[str, torch.Tensor], activation: dict) -> None:
    """A ``sae.pt`` as saev's current ``dump`` writes it (schema 5, OSU-NLP-Group/saev at 3d73f1f):
    one JSON header line (``schema``, ``cfg`` with the activation as ``{"cls", "params"}``, ``commit``,
    ``lib``), then ``torch.save`` of the state dict: ``W_enc [d_model, d_sae]``, ``b_enc [d_sae]``,
    ``W_dec [d_sae, d_model]``, ``b_dec [d_model]``, and BatchTopK's ``activation.threshold`` buffer."""
    cfg = {
        "d_model": D_IN,
        "d_sae": D_SAE,
        "activation": activation,
        "reinit_blend": 0.8,
        "reinit_enc_dec_tranpose": True,
        "remove_parallel_grads": True,
        "normalize_w_dec": True,
    }
    header = {"schema": 5, "cfg": cfg, "commit": "3d73f1f7122738563404e4c50a98d897aa18a7d0", "lib": "0.2.0"}
    with open(path, "wb") as fd:
        fd.write(json.dumps(header).encode() + b"\n")
        torch.save(weights, fd)


@pytest.mark.parametrize(
    ("activation", "expected_class"),
    [
        ({"cls": "Relu", "params": {"key": "relu"}}, StandardSAE),
        ({"cls": "TopK", "params": {"key": "top-k", "top_k": K}}, TopKSAE),
        ({"cls": "BatchTopK", "params": {"key": "batch-top-k", "top_k": K, "momentum": 0.01}}, JumpReLUSAE),
    ],
    ids=["relu", "topk", "batchtopk"],
)
def test_saev_schema_checkpoints_load_with_identical_activations(tmp_path, activation, expected_class):
    gen = torch.Generator().manual_seed(2)
    weights = {
        "W_dec": 0.3 * torch.randn(D_SAE, D_IN, generator=gen),
        "b_dec": 0.3 * torch.randn(D_IN, generator=gen),
        "W_enc": 0.3 * torch.randn(D_IN, D_SAE, generator=gen),
        # The k-th largest pre-activation positive: where SAELens' TopK and saev's agree.
        "b_enc": 0.3 * torch.randn(D_SAE, generator=gen) + 1.0,
    }
    threshold = 1.2
    if activation["cls"] == "BatchTopK":
        weights["activation.threshold"] = torch.tensor(threshold)
    _write_saev_schema_5(tmp_path / "sae.pt", weights, activation)
    x = _activations(100, seed=4)
    # saev's encode: h = x @ W_enc + b_enc (no b_dec subtracted), then the activation; decode: f @ W_dec + b_dec.
    h = x @ weights["W_enc"] + weights["b_enc"]
    if activation["cls"] == "Relu":
        expected = h.relu()
    elif activation["cls"] == "TopK":
        top = h.topk(K, dim=-1)
        expected = torch.zeros_like(h).scatter(-1, top.indices, top.values)
    else:  # eval mode: a JumpReLU at the running threshold
        expected = torch.where(h > threshold, h, torch.zeros_like(h))
    sae = load_saev_sae(tmp_path, hook_name="blocks.0.hook_resid_post", model_name="tiny-clip", family="clip")
    assert isinstance(sae, expected_class) and not sae.cfg.apply_b_dec_to_input
    assert sae.cfg.metadata.saev_schema == 5
    with torch.no_grad():
        assert (expected > 0).any() and (expected == 0).any()
        codes = sae.encode(x)
        torch.testing.assert_close(codes, expected, atol=1e-5, rtol=1e-6)
        torch.testing.assert_close(
            sae.decode(codes), expected @ weights["W_dec"] + weights["b_dec"], atol=1e-5, rtol=1e-5
        )
        sae.save_model(tmp_path / "converted")
        torch.testing.assert_close(
            SAE.load_from_disk(str(tmp_path / "converted")).encode(x), expected, atol=1e-5, rtol=1e-6
        )


def test_a_local_saev_file_needs_its_hook(tmp_path, saev_old):
    saev_old[0].dump(str(tmp_path / "sae.pt"), _saev_old_sae(saev_old, exp_factor=2))
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
    tmp_path, monkeypatch, saev_old, release, repo_id, model, family
):
    entry = get_release(release)
    assert (entry.repo_id, entry.model, entry.format) == (repo_id, model, "saev")
    requested = []

    def fake_download(repo, folder):  # the hub, replaced by a small saev 0.1.0 file
        requested.append((repo, folder))
        saev_old[0].dump(str(tmp_path / "sae.pt"), _saev_old_sae(saev_old, exp_factor=2))
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
