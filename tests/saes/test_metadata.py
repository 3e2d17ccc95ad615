import pytest
import torch
from sae_lens import SAE, StandardSAE, StandardSAEConfig
from sae_lens.saes.sae import SAEMetadata

from vis_steer_lens.hook_names import UnknownHookNameError
from vis_steer_lens.saes import set_vision_metadata, vision_sae_metadata


def test_metadata_names_the_hook_in_all_three_conventions():
    meta = vision_sae_metadata("vision_encoder.encoder_layers.16.hook_out", "google/gemma-3-4b-it")
    assert meta["hook_name"] == "blocks.16.hook_resid_post"
    assert meta["hook_name_transformer_bridge"] == "vision_encoder.encoder_layers.16.hook_out"
    assert meta["hook_name_hf"] == "model.vision_tower.encoder.layers.16"
    assert meta["model_class_name"] == "HookedViT"
    assert meta["model_name"] == "google/gemma-3-4b-it"
    assert meta["prepend_bos"] is False


def test_metadata_keeps_extras_and_drops_none():
    meta = vision_sae_metadata(
        "blocks.2.hook_resid_post", "toy", image_size=896, context_size=4096, dataset_path=None
    )
    assert meta["image_size"] == 896
    assert meta["context_size"] == 4096
    assert "dataset_path" not in meta


def test_metadata_rejects_layers_beyond_the_tower():
    with pytest.raises(UnknownHookNameError):
        vision_sae_metadata("blocks.30.hook_resid_post", "toy", n_layers=27)
    with pytest.raises(UnknownHookNameError):
        vision_sae_metadata("blocks.3.hook_resid_pots", "toy")


def test_metadata_survives_save_and_plain_saelens_load(tmp_path):
    meta = vision_sae_metadata(
        "model.vision_tower.encoder.layers.3",
        "toy/vision",
        n_layers=4,
        image_size=64,
        context_size=16,
        dataset_path="toy-shapes",
    )
    sae = StandardSAE(StandardSAEConfig(d_in=8, d_sae=32, metadata=SAEMetadata(**meta)))
    sae.save_model(tmp_path)
    loaded = SAE.load_from_disk(tmp_path)
    for key, value in meta.items():
        assert loaded.cfg.metadata[key] == value, key
    assert loaded.cfg.metadata.hook_name == "blocks.3.hook_resid_post"
    x = torch.randn(5, 8)
    torch.testing.assert_close(loaded(x), sae(x))


def test_set_vision_metadata_overrides_fields_in_place():
    sae = StandardSAE(StandardSAEConfig(d_in=4, d_sae=8, metadata=SAEMetadata(model_name="old")))
    returned = set_vision_metadata(sae, vision_sae_metadata("blocks.0.hook_resid_post", "new"))
    assert returned is sae
    assert sae.cfg.metadata.model_name == "new"
    assert sae.cfg.metadata.hook_name_hf == "model.vision_tower.encoder.layers.0"


def test_the_sae_identity_fingerprints_every_weight():
    """Two SAEs that differ only past the first 16 decoder rows (or only in the encoder) differ."""
    from sae_lens import TopKSAE, TopKSAEConfig

    from vis_steer_lens.saes.metadata import sae_identity

    def make():
        torch.manual_seed(0)
        sae = TopKSAE(TopKSAEConfig(d_in=8, d_sae=64, k=4))
        with torch.no_grad():
            for param in sae.parameters():
                param.normal_()
        return sae

    base, later_row, encoder = make(), make(), make()
    assert sae_identity(base) == sae_identity(make())
    with torch.no_grad():
        later_row.W_dec[40, 0] += 1.0
        encoder.W_enc[0, 0] += 1.0
    assert len({sae_identity(base), sae_identity(later_row), sae_identity(encoder)}) == 3
