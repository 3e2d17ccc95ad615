"""Family detection: by model class / config type, never by a silent default or a substring of a name."""

from __future__ import annotations

import pytest

from vis_steer_lens.families import (
    UnsupportedModelError,
    adapter_for,
    adapter_for_tower,
    family_of_model_name,
    supported_families,
)


def test_the_five_families_are_registered():
    assert {"gemma3", "internvl3", "qwen2_vl", "qwen2_5_vl", "llava", "paligemma"} <= set(
        supported_families()
    )


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("google/paligemma2-3b-pt-448", "paligemma"),
        ("google/paligemma-3b-mix-224", "paligemma"),  # holds "gemma-3" inside a word
        ("google/gemma-3-4b-it", "gemma3"),
        ("google/medgemma-4b-it", "gemma3"),
        ("llava-hf/llava-1.5-7b-hf", "llava"),
        ("OpenGVLab/InternVL3-14B-hf", "internvl3"),
        ("Qwen/Qwen2.5-VL-7B-Instruct", "qwen2_5_vl"),
    ],
)
def test_model_names_go_to_their_family(name, family):
    assert family_of_model_name(name) == family


def test_an_unclaimed_name_raises_unless_a_default_is_passed():
    with pytest.raises(UnsupportedModelError, match="No model family claims the name 'my-own-vlm'"):
        family_of_model_name("my-own-vlm")
    assert family_of_model_name("my-own-vlm", default="gemma3") == "gemma3"
    assert family_of_model_name("toy", default=None) is None


def test_configs_go_by_config_type_not_by_name():
    from transformers import Gemma3Config, LlavaConfig, PaliGemmaConfig

    paligemma = PaliGemmaConfig()
    paligemma._name_or_path = "google/gemma-3-4b-it"  # a misleading name changes nothing
    assert adapter_for(paligemma).name == "paligemma"
    assert adapter_for(Gemma3Config()).name == "gemma3"
    assert adapter_for(LlavaConfig()).name == "llava"


def test_an_unknown_architecture_raises_one_clear_line():
    from transformers import BlipConfig

    with pytest.raises(UnsupportedModelError) as error:
        adapter_for(BlipConfig())
    message = str(error.value)
    assert "\n" not in message
    assert "model type 'blip'" in message and "paligemma" in message and "register_adapter" in message


def test_bare_towers_go_to_the_documented_adapter():
    from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

    tiny = dict(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2, image_size=8)
    # A bare SigLIP tower gets Gemma 3's adapter (PaliGemma's wraps it the same way; inside a PaliGemma
    # the VLM's config type decides); a bare CLIP tower gets LLaVA's.
    assert adapter_for_tower(SiglipVisionModel(SiglipVisionConfig(**tiny, patch_size=4))).name == "gemma3"
    assert adapter_for_tower(CLIPVisionModel(CLIPVisionConfig(**tiny, patch_size=4))).name == "llava"
