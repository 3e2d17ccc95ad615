from pathlib import Path

import huggingface_hub
import pytest
import torch
from sae_lens import SAE, StandardSAE, StandardSAEConfig, TopKSAE
from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
from sae_lens.saes.sae import SAEMetadata

from vis_steer_lens.saes import (
    SAESourceError,
    UnknownVisionReleaseError,
    get_release,
    load_sae,
    register_converter,
    registered_converters,
    unregister_converter,
    vision_sae_metadata,
)

GEMMA = "gemma-3-4b-it-vision-topk-8192"


def _small_saelens_sae(d_in: int = 6, d_sae: int = 10) -> StandardSAE:
    meta = vision_sae_metadata("blocks.1.hook_resid_post", "toy")
    torch.manual_seed(0)
    return StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae, metadata=SAEMetadata(**meta)))


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """Replace the hub download by a local folder; records every call. Nothing reaches the network."""
    root = tmp_path / "hub"
    calls = []

    def fake_snapshot_download(repo_id, allow_patterns=None, **kwargs):
        calls.append({"repo_id": repo_id, "allow_patterns": allow_patterns, **kwargs})
        return str(root / repo_id.replace("/", "--"))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    return root, calls


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("this test must not download anything")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    monkeypatch.setattr(SAE, "from_pretrained", classmethod(refuse))


def test_local_saelens_folder(tmp_path, no_network):
    sae = _small_saelens_sae()
    sae.save_model(tmp_path)
    loaded = load_sae(tmp_path)
    assert isinstance(loaded, StandardSAE)
    assert loaded.cfg.metadata.hook_name == "blocks.1.hook_resid_post"
    x = torch.randn(4, 6)
    torch.testing.assert_close(loaded(x), sae(x))


def test_local_saelens_folder_with_dtype(tmp_path, no_network):
    _small_saelens_sae().save_model(tmp_path)
    loaded = load_sae(str(tmp_path), dtype=torch.float64)
    assert loaded.W_enc.dtype == torch.float64 and loaded.cfg.dtype == "float64"
    assert load_sae(tmp_path, dtype="bfloat16").W_dec.dtype == torch.bfloat16


def test_local_dictionary_learning_folder(tmp_path, write_dl_folder, dl_reference, no_network):
    state = write_dl_folder(tmp_path)
    sae = load_sae(tmp_path)
    assert isinstance(sae, TopKSAE)
    x = torch.randn(9, 12)
    torch.testing.assert_close(sae.encode(x), dl_reference.encode(state, x), atol=1e-5, rtol=0)


def test_vision_release_downloads_only_its_folder_and_converts(fake_hub, write_dl_folder, dl_reference):
    root, calls = fake_hub
    release = get_release(GEMMA)
    folder = release.saes["blocks.16.hook_resid_post"]
    state = write_dl_folder(root / release.repo_id.replace("/", "--") / folder, layer=16)

    sae = load_sae(GEMMA, "vision_encoder.encoder_layers.16.hook_out", dtype="float64")
    assert calls == [{"repo_id": release.repo_id, "allow_patterns": [f"{folder}/*"]}]
    assert isinstance(sae, TopKSAE) and sae.W_enc.dtype == torch.float64
    assert sae.cfg.metadata.hook_name == "blocks.16.hook_resid_post"
    x = torch.randn(5, 12, dtype=torch.float64)
    expected = dl_reference.encode({key: v.double() for key, v in state.items()}, x)
    torch.testing.assert_close(sae.encode(x), expected, atol=1e-5, rtol=0)


def test_vision_release_needs_a_valid_sae_id(fake_hub):
    with pytest.raises(SAESourceError, match="blocks.6.hook_resid_post"):
        load_sae(GEMMA)
    with pytest.raises(UnknownVisionReleaseError, match="Valid sae_id"):
        load_sae(GEMMA, "blocks.5.hook_resid_post")
    assert fake_hub[1] == []


def test_saelens_release_goes_through_from_pretrained(monkeypatch):
    release = next(iter(get_pretrained_saes_directory()))
    sae_id = next(iter(get_pretrained_saes_directory()[release].saes_map))
    calls = []

    def fake_from_pretrained(cls, release_name, sae_id_arg, device="cpu", dtype="float32", **kwargs):
        calls.append((release_name, sae_id_arg, device, dtype))
        return _small_saelens_sae()

    monkeypatch.setattr(SAE, "from_pretrained", classmethod(fake_from_pretrained))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: pytest.fail("no hub download"))
    sae = load_sae(release, sae_id, dtype="float64")
    assert calls == [(release, sae_id, "cpu", "float64")]
    assert sae.W_enc.dtype == torch.float64
    with pytest.raises(SAESourceError, match="needs an sae_id"):
        load_sae(release)


def test_hub_repo_with_saelens_folder(fake_hub):
    root, calls = fake_hub
    sae = _small_saelens_sae()
    sae.save_model(root / "someone--vision-saes" / "layer_3" / "width_10")
    loaded = load_sae("someone/vision-saes", "layer_3/width_10")
    assert calls == [{"repo_id": "someone/vision-saes", "allow_patterns": ["layer_3/width_10/*"]}]
    x = torch.randn(3, 6)
    torch.testing.assert_close(loaded(x), sae(x))


def test_hub_repo_with_dictionary_learning_folder(fake_hub, write_dl_folder):
    root, _ = fake_hub
    write_dl_folder(root / "someone--dl-saes" / "run" / "trainer_0")
    assert isinstance(load_sae("someone/dl-saes", "run/trainer_0"), TopKSAE)


def test_hub_repo_errors(fake_hub):
    with pytest.raises(SAESourceError, match="pass sae_id"):
        load_sae("someone/vision-saes")
    with pytest.raises(SAESourceError, match="has no folder 'missing'"):
        load_sae("someone/vision-saes", "missing")


def test_unknown_source_is_a_clear_value_error(no_network):
    with pytest.raises(ValueError) as info:
        load_sae("definitely-not-an-sae")
    message = str(info.value)
    assert isinstance(info.value, SAESourceError)
    assert "local folder" in message and "hub repository" in message and "SAELens release" in message


def test_folder_in_unknown_format(tmp_path, no_network):
    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(SAESourceError, match="weights.npz"):
        load_sae(tmp_path)
    with pytest.raises(SAESourceError, match="is a file"):
        load_sae(tmp_path / "weights.npz")


def test_converter_argument_takes_a_callable_or_a_name(tmp_path, write_dl_folder, no_network):
    seen = []

    def my_converter(folder: Path) -> SAE:
        seen.append(Path(folder))
        return _small_saelens_sae()

    (tmp_path / "custom").mkdir()
    assert isinstance(load_sae(tmp_path / "custom", converter=my_converter), StandardSAE)
    assert seen == [tmp_path / "custom"]

    write_dl_folder(tmp_path / "dl")
    assert isinstance(load_sae(tmp_path / "dl", converter="dictionary_learning"), TopKSAE)
    with pytest.raises(SAESourceError, match="Unknown converter 'nope'"):
        load_sae(tmp_path / "dl", converter="nope")


def test_registered_converter_is_detected_after_the_builtins(tmp_path, no_network):
    (tmp_path / "MY_FORMAT").write_text("")
    register_converter("my-format", lambda f: (f / "MY_FORMAT").is_file(), lambda f: _small_saelens_sae(5, 7))
    try:
        assert registered_converters()[:2] == ["saelens", "dictionary_learning"]
        assert "my-format" in registered_converters()
        assert load_sae(tmp_path).cfg.d_sae == 7
        with pytest.raises(ValueError, match="already registered"):
            register_converter("my-format", lambda f: False, lambda f: None)
        with pytest.raises(ValueError, match="built-in"):
            register_converter("saelens", lambda f: False, lambda f: None)
    finally:
        unregister_converter("my-format")
    assert "my-format" not in registered_converters()


def test_an_sae_travels_to_a_larger_model_with_the_same_tower_only(tmp_path):
    """Gemma 3 4B, 12B and 27B share one tower: an SAE of one loads on the others, not on another tower."""
    from vis_steer_lens import HookedVLM, SAEModelMismatchError, load_sae
    from vis_steer_lens.explain import SteeringExplainer
    from vis_steer_lens.testing import tiny_hf_vlm, tiny_sae

    small, processor = tiny_hf_vlm("gemma3", seed=0)
    large, large_processor = tiny_hf_vlm("gemma3", seed=1, text_width=48)
    large.model.vision_tower.load_state_dict(small.model.vision_tower.state_dict())
    small_vlm = HookedVLM.from_hf(small, processor=processor, model_name="tiny-4b")
    large_vlm = HookedVLM.from_hf(large, processor=large_processor, model_name="tiny-27b")
    sae = tiny_sae(small_vlm, "blocks.1.hook_resid_post", d_sae=8)
    sae.save_model(tmp_path / "sae")

    loaded = load_sae(str(tmp_path / "sae"), model=large_vlm)
    assert loaded.cfg.metadata.tower_fingerprint == large_vlm.vision.tower_fingerprint()
    rows = SteeringExplainer(large_vlm, loaded, coefficient=20.0, max_new_tokens=3).explain(
        [0, 1], progress=False
    )
    assert len(rows) == 2

    other = HookedVLM.from_hf(tiny_hf_vlm("gemma3", seed=2)[0], model_name="tiny-other")
    with pytest.raises(SAEModelMismatchError, match="fingerprint"):
        load_sae(str(tmp_path / "sae"), model=other)


def test_a_local_folder_refuses_an_sae_id_it_does_not_hold(tmp_path, no_network):
    sae = _small_saelens_sae()
    sae.save_model(tmp_path / "repo" / "layer1")
    # The id of the SAE's own hook, or a folder inside, is accepted.
    assert load_sae(tmp_path / "repo" / "layer1", "blocks.1.hook_resid_post").cfg.d_sae == sae.cfg.d_sae
    assert load_sae(tmp_path / "repo", "layer1").cfg.d_sae == sae.cfg.d_sae
    with pytest.raises(SAESourceError, match="blocks.1.hook_resid_post.*sae_id 'blocks.5.hook_resid_post'"):
        load_sae(tmp_path / "repo" / "layer1", "blocks.5.hook_resid_post")
    with pytest.raises(SAESourceError, match="names neither"):
        load_sae(tmp_path / "repo" / "layer1", "layer7")
