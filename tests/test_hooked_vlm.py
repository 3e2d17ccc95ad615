"""HookedVLM against the Hugging Face Gemma 3 model it wraps."""

from __future__ import annotations

import pytest
import torch
from conftest import build_tiny_gemma3, image_prompt_ids
from PIL import Image

from vis_steer_lens import HookedVLM, UnknownHookNameError

ATOL = 1e-5


@pytest.fixture
def vlm(tiny_model):
    return HookedVLM.from_hf(tiny_model)


def test_logits_equal_hf(tiny_model, vlm, pixels):
    inputs = image_prompt_ids(batch=3)
    with torch.no_grad():
        ref = tiny_model(**inputs, pixel_values=pixels).logits
        ours = vlm(**inputs, pixel_values=pixels)
        cached, cache = vlm.run_with_cache(**inputs, pixel_values=pixels)
    assert (ours - ref).abs().max() <= ATOL
    assert (cached - ref).abs().max() <= ATOL
    assert cache["projector.hook_out"].shape == (3, 4, 32)  # [batch, soft_tokens, d_lm]
    assert cache["resid_post", 1].shape == (3, 16, 32)
    assert torch.equal(
        cache["resid_post", -1], cache["resid_post", 1]
    )  # layer shorthand counts vision layers


def test_generate_equals_hf_and_vision_hooks_fire_once(tiny_model, vlm, pixels):
    inputs = image_prompt_ids(batch=3)
    calls = []
    with torch.no_grad():
        ref = tiny_model.generate(**inputs, pixel_values=pixels, max_new_tokens=6, do_sample=False)
        with vlm.hooks(fwd_hooks=[("blocks.1.hook_resid_post", lambda act, hook: calls.append(act.shape))]):
            ours = vlm.generate(**inputs, pixel_values=pixels, max_new_tokens=6)
    assert torch.equal(ours, ref)
    assert calls == [torch.Size([3, 16, 32])]  # once per prompt batch, not per generated token


def test_batched_generate_equals_one_row_at_a_time(vlm, pixels):
    inputs = image_prompt_ids(batch=3)
    with torch.no_grad():
        batched = vlm.generate(**inputs, pixel_values=pixels, max_new_tokens=6)
        rows = [
            vlm.generate(
                **{k: v[i : i + 1] for k, v in inputs.items()},
                pixel_values=pixels[i : i + 1],
                max_new_tokens=6,
            )
            for i in range(3)
        ]
    assert torch.equal(batched, torch.cat(rows))


def test_greedy_generation_is_reproducible(vlm, pixels):
    inputs = image_prompt_ids(batch=2)
    with torch.no_grad():
        first = vlm.generate(**inputs, pixel_values=pixels[:2], max_new_tokens=8)
        second = vlm.generate(**inputs, pixel_values=pixels[:2], max_new_tokens=8)
    assert torch.equal(first, second)


@pytest.mark.parametrize(
    "hook_name", ["blocks.0.hook_resid_post", "vision.blocks.1.hook_mlp_out", "projector.hook_out"]
)
def test_vision_edits_change_the_generated_text(vlm, pixels, hook_name):
    inputs = image_prompt_ids(batch=3)
    with torch.no_grad():
        clean = vlm.generate(**inputs, pixel_values=pixels, max_new_tokens=6)
        torch.manual_seed(0)
        with vlm.hooks(fwd_hooks=[(hook_name, lambda act, hook: act + 10 * torch.randn_like(act))]):
            steered = vlm.generate(**inputs, pixel_values=pixels, max_new_tokens=6)
        again = vlm.generate(**inputs, pixel_values=pixels, max_new_tokens=6)
    assert not torch.equal(clean, steered)
    assert torch.equal(clean, again)  # the hook went away with its context


def test_precomputed_image_features_and_resumed_tower(vlm, pixels):
    inputs = image_prompt_ids(batch=3)
    with torch.no_grad():
        logits = vlm(**inputs, pixel_values=pixels)
        resid = vlm.vision(pixels, stop_at_layer=1)
        features = vlm.encode_images(resid=resid, start_at_layer=1)
        resumed = vlm(**inputs, image_features=features)
    assert (resumed - logits).abs().max() <= ATOL
    with pytest.raises(ValueError, match="not both"):
        vlm(**inputs, pixel_values=pixels, image_features=features)


def test_hooks_removed_after_exception(vlm, pixels):
    def failing(act, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        vlm.run_with_hooks(
            **image_prompt_ids(batch=3), pixel_values=pixels, fwd_hooks=[("projector.hook_out", failing)]
        )
    assert not any(hp.fwd_hooks or hp._forward_hooks for hp in vlm.hook_dict.values())


def test_unknown_hook_name(vlm, pixels):
    with pytest.raises(UnknownHookNameError, match="projector.hook_out"):
        vlm.add_hook("projector.hook_outt", lambda a, hook: a)


def test_from_pretrained_local_folder(tiny_checkpoint, pixels):
    from transformers import Gemma3ForConditionalGeneration

    reference = Gemma3ForConditionalGeneration.from_pretrained(tiny_checkpoint).eval()
    vlm = HookedVLM.from_pretrained(tiny_checkpoint)
    assert vlm.processor is None  # the tiny checkpoint has no processor files
    inputs = image_prompt_ids(batch=3)
    with torch.no_grad():
        assert (
            vlm(**inputs, pixel_values=pixels) - reference(**inputs, pixel_values=pixels).logits
        ).abs().max() <= ATOL
    with pytest.raises(ValueError, match="no processor"):
        vlm.prompt_inputs(None, "hello")


def test_from_pretrained_bfloat16(tiny_checkpoint, pixels):
    from transformers import Gemma3ForConditionalGeneration

    reference = Gemma3ForConditionalGeneration.from_pretrained(tiny_checkpoint, dtype=torch.bfloat16).eval()
    vlm = HookedVLM.from_pretrained(tiny_checkpoint, dtype=torch.bfloat16)
    assert vlm.dtype == torch.bfloat16
    inputs = image_prompt_ids(batch=3)
    with torch.no_grad():
        ours = vlm(**inputs, pixel_values=pixels)
        ref = reference(**inputs, pixel_values=pixels).logits
        tokens = vlm.generate(**inputs, pixel_values=pixels, max_new_tokens=4)
    assert ours.dtype == torch.bfloat16
    assert (ours.float() - ref.float()).abs().max() <= 5e-2
    assert tokens.shape == (3, inputs["input_ids"].shape[1] + 4)


def test_models_differ_by_seed():
    """Guards the fixtures: two seeds give different weights, so equality tests are not vacuous."""
    a, b = build_tiny_gemma3(seed=0), build_tiny_gemma3(seed=1)
    assert not torch.equal(
        a.model.vision_tower.encoder.layers[0].mlp.fc1.weight,
        b.model.vision_tower.encoder.layers[0].mlp.fc1.weight,
    )


def test_public_contract_splits_inputs_and_explainers_refuse_a_plain_model():
    """What explainers use of a VLM is public: the tower's inputs and the language model's come apart
    by family (Qwen's image_grid_thw goes to both), and a Hugging Face model is refused by name."""
    from vis_steer_lens import SteeringExplainer
    from vis_steer_lens.testing import tiny_sae, tiny_vlm

    vlm = tiny_vlm("qwen2_5_vl")
    image = Image.new("RGB", (48, 32), (200, 30, 30))
    inputs = vlm.prompt_inputs([image], "What is in the image?")
    language, tower = vlm.split_inputs(inputs)
    assert "pixel_values" not in language and "pixel_values" in tower
    assert "image_grid_thw" in tower and "image_grid_thw" in language
    features = vlm.encode_images(**tower)
    assert features.shape[1] == int((inputs["input_ids"] == vlm.image_token_id).sum())
    assert vlm.end_of_answer_ids() and vlm.tokenizer.eos_token_id in vlm.end_of_answer_ids()
    sae = tiny_sae(vlm, "blocks.0.hook_resid_post")
    with pytest.raises(TypeError, match="HookedVLM.from_hf"):
        SteeringExplainer(vlm.hf_model, sae, coefficient=1.0)
