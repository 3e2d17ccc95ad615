"""SAEs trained on, saved from, loaded into and spliced into a tiny random Gemma 3."""

from __future__ import annotations

import pytest
import torch
from conftest import build_tiny_gemma3, image_prompt_ids
from sae_lens import SAE, TopKSAE, TopKSAEConfig

from vis_steer_lens import (
    FeatureIndexError,
    HookedViT,
    HookedVLM,
    SAEModelMismatchError,
    load_sae,
    train_sae,
)
from vis_steer_lens.saes import check_feature_ids, vision_sae_metadata

HOOK = "blocks.1.hook_resid_post"


def random_pixels(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def random_topk_sae(d_in: int = 32, d_sae: int = 64, hook: str = HOOK, seed: int = 0) -> TopKSAE:
    torch.manual_seed(seed)
    cfg = TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=8)
    sae = TopKSAE(cfg)
    with torch.no_grad():
        for param in sae.parameters():
            param.normal_(std=0.3)
    for key, value in vision_sae_metadata(hook, "tiny-gemma3").items():
        sae.cfg.metadata[key] = value
    return sae


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A VLM, an SAE trained on it with train_sae, and the folder it was saved to."""
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    vlm = HookedVLM.from_hf(build_tiny_gemma3(seed=5))
    pixel_stream = (random_pixels(1, seed)[0] for seed in range(10_000))
    sae, log = train_sae(
        vlm,
        "vision_encoder.encoder_layers.1.hook_out",  # a TransformerBridge name works too
        pixel_stream,
        d_sae=64,
        k=8,
        total_training_samples=40_000,
        batch_size=512,
        image_batch_size=64,
        lr=3e-3,
        n_eval_images=32,
        dataset_name="gaussian-noise",
        progress=False,
    )
    folder = tmp_path_factory.mktemp("sae")
    sae.save_model(folder)
    torch.set_num_threads(2)
    return vlm, sae, log, folder


def test_train_sae_reports_quality_and_metadata(trained):
    _, sae, log, _ = trained
    report = sae.cfg.metadata.training_report
    assert report["explained_variance"] > 0.5
    assert 0.0 <= report["dead_fraction"] < 1.0
    assert report["mean_l0"] <= 8 + 1e-6
    assert len(log) >= 2
    meta = sae.cfg.metadata
    assert meta.model_class_name == "HookedViT"
    assert meta.hook_name == HOOK
    assert meta.hook_name_transformer_bridge == "vision_encoder.encoder_layers.1.hook_out"
    assert meta.hook_name_hf == "model.vision_tower.encoder.layers.1"
    assert meta.image_size == 32 and meta.context_size == 16
    assert meta.dataset_path == "gaussian-noise"


def test_saved_sae_loads_with_plain_saelens_and_load_sae(trained):
    vlm, sae, _, folder = trained
    plain = SAE.load_from_disk(folder)
    ours = load_sae(str(folder), model=vlm)
    x = torch.randn(5, 32)
    torch.testing.assert_close(plain.encode(x), sae.encode(x))
    torch.testing.assert_close(ours.encode(x), sae.encode(x))
    assert plain.cfg.metadata.hook_name == HOOK
    assert (
        plain.cfg.metadata.training_report["explained_variance"]
        == sae.cfg.metadata.training_report["explained_variance"]
    )


def test_splice_with_error_term_leaves_outputs_unchanged(trained):
    vlm, sae, _, _ = trained
    inputs, pixels = image_prompt_ids(batch=2), random_pixels(2, seed=77)
    with torch.no_grad():
        clean = vlm(**inputs, pixel_values=pixels)
        with vlm.saes([sae], use_error_term=True):
            spliced, cache = vlm.run_with_cache(**inputs, pixel_values=pixels)
        without_error = vlm.run_with_saes(**inputs, pixel_values=pixels, saes=[sae])
    assert (spliced - clean).abs().max() <= 1e-5
    assert (without_error - clean).abs().max() > 1e-4  # the reconstruction alone is not exact
    acts = cache[f"{HOOK}.hook_sae_acts_post"]
    assert acts.shape == (2, 16, 64)
    assert ((acts > 0).sum(-1) <= 8).all()
    torch.testing.assert_close(acts, sae.encode(cache[f"{HOOK}.hook_sae_input"]))
    assert f"{HOOK}.hook_sae_error" in cache.keys()


def test_splice_is_undone_on_exit_even_after_an_error(trained):
    vlm, sae, _, _ = trained
    names_before = list(vlm.hook_dict)
    with pytest.raises(RuntimeError, match="boom"):
        with vlm.saes([sae]):
            assert f"{HOOK}.hook_sae_acts_post" in vlm.hook_dict
            raise RuntimeError("boom")
    assert list(vlm.hook_dict) == names_before
    assert list(vlm.vision.hook_dict) == vlm.vision.hook_names()
    assert vlm.acts_to_saes == {}


def test_editing_features_through_the_splice_changes_generation(trained):
    vlm, sae, _, _ = trained
    inputs, pixels = image_prompt_ids(batch=2), random_pixels(2, seed=78)
    with torch.no_grad():
        with vlm.saes([sae], use_error_term=True):
            clean = vlm.generate(**inputs, pixel_values=pixels, max_new_tokens=5)

            def boost(acts, hook):
                acts[..., 3] += 50.0
                return acts

            with vlm.hooks(fwd_hooks=[(f"{HOOK}.hook_sae_acts_post", boost)]):
                steered = vlm.generate(**inputs, pixel_values=pixels, max_new_tokens=5)
    assert not torch.equal(clean, steered)


def test_splicing_into_a_bare_hookedvit_and_per_head_hooks():
    vit = HookedViT.from_hf(build_tiny_gemma3().model.vision_tower)
    sae = random_topk_sae(hook="blocks.0.attn.hook_z")
    pixels = random_pixels(2, seed=3)
    with torch.no_grad():
        clean = vit(pixels)
        with vit.saes([sae], use_error_term=True):
            out, cache = vit.run_with_cache(pixels)
    assert (out - clean).abs().max() <= 1e-5
    assert cache["blocks.0.attn.hook_z.hook_sae_acts_post"].shape == (2, 16, 64)


def test_sae_that_does_not_fit_is_rejected():
    vlm = HookedVLM.from_hf(build_tiny_gemma3())
    with pytest.raises(SAEModelMismatchError, match="d_in=48"):
        vlm.add_sae(random_topk_sae(d_in=48))
    with pytest.raises(SAEModelMismatchError, match="blocks.9.hook_resid_post"):
        vlm.add_sae(random_topk_sae(hook="blocks.9.hook_resid_post"))
    missing = random_topk_sae()
    missing.cfg.metadata.hook_name = None
    with pytest.raises(SAEModelMismatchError, match="no hook_name"):
        vlm.add_sae(missing)
    assert vlm.acts_to_saes == {}


def test_sae_with_mlp_hook_fits_the_mlp_width(tmp_path):
    vlm = HookedVLM.from_hf(build_tiny_gemma3())
    sae = random_topk_sae(d_in=64, hook="blocks.1.mlp.hook_post")
    sae.save_model(tmp_path)
    loaded = load_sae(str(tmp_path), model=vlm)
    assert loaded.cfg.d_in == 64
    one_layer = HookedVLM.from_hf(build_tiny_gemma3(vision_layers=1)).vision
    with pytest.raises(SAEModelMismatchError, match="1-layer tower"):
        load_sae(str(tmp_path), model=one_layer)


def test_feature_ids_out_of_range():
    sae = random_topk_sae()
    assert check_feature_ids(sae, [0, 63]) == [0, 63]
    assert check_feature_ids(sae, torch.tensor([5])) == [5]
    with pytest.raises(FeatureIndexError, match="d_sae=64"):
        check_feature_ids(sae, [3, 64, -1])
