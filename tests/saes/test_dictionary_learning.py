import json

import pytest
import torch
from sae_lens import SAE, TopKSAE

from vis_steer_lens.saes import (
    DictionaryLearningFormatError,
    hook_name_from_submodule,
    is_dictionary_learning_folder,
    load_dictionary_learning_sae,
)


def test_converted_sae_matches_reference_math(tmp_path, write_dl_folder, dl_reference):
    state = write_dl_folder(tmp_path, d_in=12, d_sae=48, k=5, layer=16)
    sae = load_dictionary_learning_sae(tmp_path)
    assert isinstance(sae, TopKSAE)
    assert (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.k) == (12, 48, 5)
    assert sae.cfg.apply_b_dec_to_input is True
    assert sae.cfg.rescale_acts_by_decoder_norm is False

    x = torch.randn(3, 7, 12) * 2  # [batch, patches, d_in]
    expected_f = dl_reference.encode(state, x)
    f = sae.encode(x)
    torch.testing.assert_close(f, expected_f, atol=1e-5, rtol=0)
    assert ((f > 0).sum(-1) <= 5).all() and ((f > 0).sum(-1) >= 1).any()
    torch.testing.assert_close(sae.decode(f), dl_reference.decode(state, expected_f), atol=1e-5, rtol=0)
    torch.testing.assert_close(sae(x), dl_reference.decode(state, expected_f), atol=1e-5, rtol=0)


def test_converted_sae_carries_vision_metadata(tmp_path, write_dl_folder):
    write_dl_folder(tmp_path, layer=6)
    meta = load_dictionary_learning_sae(tmp_path, image_size=896).cfg.metadata
    assert meta.hook_name == "blocks.6.hook_resid_post"
    assert meta.hook_name_transformer_bridge == "vision_encoder.encoder_layers.6.hook_out"
    assert meta.model_name == "google/gemma-3-4b-it"
    assert meta.model_class_name == "HookedViT"
    assert meta.image_size == 896
    assert meta.source_format == "dictionary_learning"


def test_converted_sae_round_trips_through_saelens_disk_format(tmp_path, write_dl_folder):
    write_dl_folder(tmp_path / "dl", seed=3)
    sae = load_dictionary_learning_sae(tmp_path / "dl")
    sae.save_model(tmp_path / "saelens")
    loaded = SAE.load_from_disk(tmp_path / "saelens")
    assert isinstance(loaded, TopKSAE)
    assert loaded.cfg.k == sae.cfg.k
    assert loaded.cfg.metadata.hook_name == "blocks.16.hook_resid_post"
    x = torch.randn(20, 12)
    torch.testing.assert_close(loaded.encode(x), sae.encode(x))
    torch.testing.assert_close(loaded(x), sae(x))


def test_dtype_and_hook_override(tmp_path, write_dl_folder):
    write_dl_folder(tmp_path)
    sae = load_dictionary_learning_sae(tmp_path, dtype="bfloat16", hook_name="blocks.2.hook_mlp_out")
    assert sae.W_enc.dtype == torch.bfloat16 and sae.cfg.dtype == "bfloat16"
    assert sae.cfg.metadata.hook_name == "blocks.2.hook_mlp_out"


@pytest.mark.parametrize(
    ("submodule", "hook"),
    [
        ("enc_res_out_layer_16", "blocks.16.hook_resid_post"),
        ("enc_res_in_layer_0", "blocks.0.hook_resid_pre"),
        ("enc_mlp_out_layer_3", "blocks.3.hook_mlp_out"),
    ],
)
def test_submodule_names_map_to_hooks(submodule, hook):
    assert hook_name_from_submodule(submodule) == hook


@pytest.mark.parametrize("bad", ["res_out_layer_16", "enc_res_out_16", "enc_resid_layer_x", "model.layers.3"])
def test_unparseable_submodule_name_is_a_clear_error(tmp_path, write_dl_folder, bad):
    write_dl_folder(tmp_path, submodule_name=bad)
    with pytest.raises(DictionaryLearningFormatError, match="enc_res_out_layer_16"):
        load_dictionary_learning_sae(tmp_path)


def test_fewer_positive_pre_activations_than_k(tmp_path, write_dl_folder, dl_reference):
    # With strongly negative biases most tokens have fewer than k positive pre-activations;
    # SAELens takes the top k before the ReLU, the reference after it: outputs must still agree.
    state = write_dl_folder(tmp_path, k=5)
    state["encoder.bias"] = torch.full_like(state["encoder.bias"], -4.0)
    torch.save(state, tmp_path / "ae.pt")
    sae = load_dictionary_learning_sae(tmp_path)
    x = torch.randn(200, 12)
    expected = dl_reference.encode(state, x)
    assert ((expected > 0).sum(-1) < 5).float().mean() > 0.5
    torch.testing.assert_close(sae.encode(x), expected, atol=1e-5, rtol=0)


def test_missing_files(tmp_path, write_dl_folder):
    write_dl_folder(tmp_path)
    (tmp_path / "ae.pt").unlink()
    assert not is_dictionary_learning_folder(tmp_path)
    with pytest.raises(DictionaryLearningFormatError, match="No ae.pt"):
        load_dictionary_learning_sae(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DictionaryLearningFormatError, match="No config.json"):
        load_dictionary_learning_sae(empty)


def test_unsupported_dict_class(tmp_path, write_dl_folder):
    write_dl_folder(tmp_path, dict_class="JumpReluAutoEncoder")
    with pytest.raises(DictionaryLearningFormatError, match="JumpReluAutoEncoder"):
        load_dictionary_learning_sae(tmp_path)


def test_shape_mismatch_between_config_and_weights(tmp_path, write_dl_folder):
    write_dl_folder(tmp_path, d_in=12, d_sae=48)
    config = json.loads((tmp_path / "config.json").read_text())
    config["trainer"]["dict_size"] = 64
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(DictionaryLearningFormatError, match=r"encoder.weight.*\(48, 12\).*\(64, 12\)"):
        load_dictionary_learning_sae(tmp_path)


def test_k_disagreement(tmp_path, write_dl_folder):
    write_dl_folder(tmp_path, k=5)
    config = json.loads((tmp_path / "config.json").read_text())
    config["trainer"]["k"] = 7
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(DictionaryLearningFormatError, match="k disagrees"):
        load_dictionary_learning_sae(tmp_path)


def test_corrupt_weights_file(tmp_path, write_dl_folder):
    write_dl_folder(tmp_path)
    data = (tmp_path / "ae.pt").read_bytes()
    (tmp_path / "ae.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(DictionaryLearningFormatError, match="corrupt"):
        load_dictionary_learning_sae(tmp_path)


def test_weights_missing_keys(tmp_path, write_dl_folder):
    state = write_dl_folder(tmp_path)
    del state["b_dec"]
    torch.save(state, tmp_path / "ae.pt")
    with pytest.raises(DictionaryLearningFormatError, match="b_dec"):
        load_dictionary_learning_sae(tmp_path)


def test_errors_are_value_errors():
    assert issubclass(DictionaryLearningFormatError, ValueError)


def test_threshold_is_recorded_not_applied(tmp_path, write_dl_folder, dl_reference):
    state = write_dl_folder(tmp_path)
    state["threshold"] = torch.tensor(0.5)
    torch.save(state, tmp_path / "ae.pt")
    sae = load_dictionary_learning_sae(tmp_path, source_format="paper-release")
    assert sae.cfg.metadata.dictionary_learning_threshold == 0.5
    assert sae.cfg.metadata.source_format == "paper-release"  # caller's metadata wins
    x = torch.randn(30, 12)
    torch.testing.assert_close(sae.encode(x), dl_reference.encode(state, x), atol=1e-5, rtol=0)


def test_internvl3_releases_get_internvl_names(tmp_path, write_dl_folder):
    """The paper's InternVL3-14B SAEs are recorded with InternVL's module paths, not Gemma's."""
    write_dl_folder(tmp_path, layer=16)
    config_path = tmp_path / "config.json"
    config = json.loads(config_path.read_text())
    config["trainer"]["lm_name"] = "OpenGVLab/InternVL3-14B"
    config_path.write_text(json.dumps(config))
    meta = load_dictionary_learning_sae(tmp_path).cfg.metadata
    assert meta.model_name == "OpenGVLab/InternVL3-14B" and meta.model_family == "internvl3"
    assert meta.hook_name == "blocks.16.hook_resid_post"
    assert meta.hook_name_hf == "model.vision_tower.encoder.layer.16"
    assert meta.hook_name_transformer_bridge is None  # transformer-lens has no InternVL bridge
