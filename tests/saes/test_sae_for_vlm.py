"""ExplainableML/sae-for-vlm checkpoints load as SAELens JumpReLU SAEs with the same activations, save in
SAELens' format, and steer LLaVA at its feature layer."""

from __future__ import annotations

import json

import pytest
import torch

from vis_steer_lens.saes.sae_for_vlm import SAEForVLMFormatError, load_sae_for_vlm

D_IN, D_SAE = 32, 48


def _their_encode(state: dict, x: torch.Tensor) -> torch.Tensor:
    """sae-for-vlm's inference encoding (use_threshold=True), written from its formula."""
    post_relu = torch.relu((x - state["b_dec"]) @ state["W_enc"] + state["b_enc"])
    return post_relu * (post_relu > state["threshold"])


def _matryoshka_state(threshold: float) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "W_enc": torch.randn(D_IN, D_SAE, generator=gen) * 0.3,
        "b_enc": torch.randn(D_SAE, generator=gen) * 0.1,
        "W_dec": torch.randn(D_SAE, D_IN, generator=gen) * 0.3,
        "b_dec": torch.randn(D_IN, generator=gen) * 0.1,
        "k": torch.tensor(8, dtype=torch.int),
        "threshold": torch.tensor(threshold),
        "group_sizes": torch.tensor([8, 16, 24]),
    }


@pytest.mark.parametrize("threshold", [0.4, -1.0], ids=["learned-threshold", "unset"])
def test_a_matryoshka_checkpoint_gives_the_same_activations(tmp_path, threshold):
    state = _matryoshka_state(threshold)
    checkpoints = tmp_path / "trainer_0" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(state, checkpoints / "ae_100000.pt")
    config = {"trainer": {"dict_class": "MatroyshkaBatchTopKSAE", "k": 8, "layer": "", "lm_name": ""}}
    (tmp_path / "trainer_0" / "config.json").write_text(json.dumps(config))
    sae = load_sae_for_vlm(checkpoints / "ae_100000.pt", layer=1, model_name="tiny-llava", n_layers=3)
    x = torch.randn(5, 7, D_IN)
    with torch.no_grad():
        theirs = _their_encode(state, x)
        ours = sae.encode(x)
        assert (theirs > 0).any() and (theirs == 0).any()
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
        torch.testing.assert_close(
            sae.decode(ours), theirs @ state["W_dec"] + state["b_dec"], atol=1e-5, rtol=0
        )
    meta = sae.cfg.metadata
    assert meta.hook_name == "blocks.1.hook_resid_post" and meta.model_family == "llava"
    assert meta.dict_class == "MatroyshkaBatchTopKSAE" and meta.group_sizes == [8, 16, 24]

    from sae_lens import SAE

    sae.save_model(tmp_path / "converted")
    reloaded = SAE.load_from_disk(str(tmp_path / "converted"))
    with torch.no_grad():
        torch.testing.assert_close(reloaded.encode(x), theirs, atol=1e-6, rtol=0)
    assert reloaded.cfg.metadata.hook_name == "blocks.1.hook_resid_post"


def test_a_batch_topk_checkpoint_loads_and_steers_llava_at_its_feature_layer(tmp_path):
    from vis_steer_lens import SteeringExplainer
    from vis_steer_lens.testing import tiny_vlm

    state = _matryoshka_state(0.2)
    batch_topk = {
        "encoder.weight": state["W_enc"].T.contiguous(),
        "encoder.bias": state["b_enc"],
        "decoder.weight": state["W_dec"].T.contiguous(),
        "b_dec": state["b_dec"],
        "k": state["k"],
        "threshold": state["threshold"],
    }
    torch.save(batch_topk, tmp_path / "ae.pt")
    sae = load_sae_for_vlm(tmp_path / "ae.pt", layer=1, model_name="tiny-llava", n_layers=3)
    x = torch.randn(4, D_IN)
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x), _their_encode(state, x), atol=1e-6, rtol=0)
    vlm = tiny_vlm("llava", vision_layers=3)  # layer 1 is the layer its language model reads
    assert SteeringExplainer(vlm, sae, coefficient=10.0).hook_name == "blocks.1.hook_resid_post"


def test_other_files_are_refused_in_one_line(tmp_path):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(SAEForVLMFormatError, match="not an sae-for-vlm SAE") as error:
        load_sae_for_vlm(tmp_path / "other.pt")
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="attachment point 'post_projection'"):
        load_sae_for_vlm(tmp_path / "other.pt", attachment_point="post_projection")
