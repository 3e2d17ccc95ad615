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
    assert (inputs["input_ids"] == vlm.image_token_id).sum() == 4


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
        tiny_vlm("llava")
