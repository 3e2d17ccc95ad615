"""vis_steer_lens.testing: tiny models of each family with working processors."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vis_steer_lens.testing import TINY_FAMILIES, tiny_hf_vlm, tiny_sae, tiny_vlm


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_tiny_vlm_answers_depend_on_the_image(family):
    vlm = tiny_vlm(family, seed=1)
    assert vlm.adapter.name == family
    gen = torch.Generator().manual_seed(0)
    colours = [tuple(torch.randint(0, 256, (3,), generator=gen).tolist()) for _ in range(6)]
    answers = vlm.generate_text(
        [Image.new("RGB", (32, 32), c) for c in colours], "What is in the image?", max_new_tokens=4
    )
    assert len(set(answers)) >= 2, answers  # a model that ignores the image would answer alike
    inputs = vlm.prompt_inputs([Image.new("RGB", (32, 32))], "What is in the image?")
    _, tower = vlm.split_inputs(inputs)
    n_soft = vlm.encode_images(**tower).shape[-2]
    # 4 soft tokens where the projector pools 2x2 patches, 16 where it maps each patch (LLaVA, PaliGemma);
    # AnyRes: a 16-token base crop, then the 1x2 tiles' 4x4 unpadded patches, a newline after each row.
    expected = {"llava": 16, "paligemma": 16, "llava_next": 36, "llava_onevision": 36}
    assert n_soft == expected.get(family, 4)
    assert (inputs["input_ids"] == vlm.image_token_id).sum() == n_soft


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_no_vision_or_projector_weight_is_left_at_a_constant_init(family):
    model, _ = tiny_hf_vlm(family)
    vlm = tiny_vlm(family)
    for module in (vlm.adapter.tower(model), vlm.adapter.projector(model)):
        for name, param in module.named_parameters():
            flat = param.flatten()
            assert flat.numel() == 1 or not bool((flat == flat[0]).all()), name


def test_tiny_sae_fits_and_records_the_tower():
    vlm = tiny_vlm("internvl3")
    sae = tiny_sae(vlm, "blocks.1.attn.hook_z", d_sae=8)
    assert sae.cfg.d_in == 32 and sae.cfg.metadata.hook_name == "blocks.1.attn.hook_z"
    assert sae.cfg.metadata.tower_fingerprint == vlm.vision.tower_fingerprint()
    assert sae.cfg.metadata.model_family == "internvl3"


def test_unknown_family_is_refused():
    with pytest.raises(ValueError, match="gemma3"):
        tiny_vlm("blip_2")


def test_a_family_without_a_builder_is_refused_naming_those_with_one():
    from vis_steer_lens.families import UnsupportedModelError
    from vis_steer_lens.testing import builder_families, get_builder

    shipped = [
        "gemma3",
        "internvl3",
        "qwen2_vl",
        "qwen2_5_vl",
        "llava",
        "paligemma",
        "llava_next",
        "llava_onevision",
    ]
    assert builder_families() == shipped
    with pytest.raises(UnsupportedModelError) as error:
        get_builder("blip_2")
    message = str(error.value)
    assert "'blip_2'" in message and ", ".join(shipped) in message
    assert "register_builder" in message and "\n" not in message


def test_a_registered_adapter_gets_test_models_from_a_registered_builder(monkeypatch):
    from vis_steer_lens import families, register_adapter
    from vis_steer_lens.adapters import Gemma3Adapter
    from vis_steer_lens.testing import builders, get_builder, register_builder, released_models
    from vis_steer_lens.testing.gemma3 import Gemma3Builder

    # Registrations on copies of both registries, put back after the test.
    monkeypatch.setattr(families, "_ADAPTERS", list(families._adapters()))
    monkeypatch.setattr(builders, "_BUILDERS", list(builders._builders()))

    class MyAdapter(Gemma3Adapter):
        name = "my_family"
        model_types = ("my_family",)

    class MyBuilder(Gemma3Builder):
        family = "my_family"
        released_configs = {"my-model": Gemma3Builder.released_configs["gemma-3-4b"]}

    register_adapter(MyAdapter())
    register_builder(MyBuilder())
    assert get_builder("my_family").adapter.name == "my_family"
    model, processor = tiny_hf_vlm("my_family")
    reference, _ = tiny_hf_vlm("gemma3")  # the same builder code and seed: the same weights
    for mine, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    assert processor.tokenizer.convert_tokens_to_ids("<start_of_image>") == model.config.boi_token_index
    assert released_models()["my-model"] == "my_family"
