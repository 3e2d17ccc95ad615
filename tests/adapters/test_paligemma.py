"""PaliGemma 2 through its adapter: HookedViT and HookedVLM equal transformers' PaliGemmaForConditionalGeneration,
with the processor's own prompt format (no chat template) and prefix-LM attention."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vis_steer_lens import HookedViT, HookedVLM
from vis_steer_lens.testing import tiny_hf_vlm

ATOL = 1e-5


@pytest.fixture(scope="module")
def paligemma():
    model, processor = tiny_hf_vlm("paligemma", vision_layers=2, seed=3)
    return model, processor, HookedVLM.from_hf(model, processor=processor)


@pytest.fixture(scope="module")
def inputs(paligemma):
    images = [Image.new("RGB", (40, 30), (200, 30, 30)), Image.new("RGB", (30, 30), (20, 90, 200))]
    return paligemma[2].prompt_inputs(images, ["What is in the image?", "colour"])


def test_the_family_is_paligemma_though_the_tower_is_gemma3s(paligemma):
    model, _, vlm = paligemma
    assert type(model).__name__ == "PaliGemmaForConditionalGeneration"
    assert vlm.adapter.name == "paligemma" and vlm.vision.cfg.family == "paligemma"
    assert HookedViT.from_hf(model.model.vision_tower).cfg.family == "gemma3"  # a bare SigLIP tower
    assert vlm.feature_layer == 1 and vlm.reads_prefix_tokens


def test_every_resid_post_equals_hf_hidden_states(paligemma):
    model, _, vlm = paligemma
    torch.manual_seed(1)
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        hf = model.model.vision_tower(pixel_values=pixels, output_hidden_states=True)
        out, cache = vlm.vision.run_with_cache(pixels)
    for layer in range(2):
        assert (cache["resid_post", layer] - hf.hidden_states[layer + 1]).abs().max() <= ATOL
    assert (out - hf.last_hidden_state).abs().max() <= ATOL


def test_prompts_are_the_processors_prefix_format(paligemma, inputs):
    _, processor, vlm = paligemma
    ids = inputs["input_ids"]
    assert (inputs["token_type_ids"] == 0).all()  # image and prompt: the bidirectional prefix
    assert int((ids == vlm.image_token_id).sum()) == 2 * 16
    row = processor.tokenizer.convert_ids_to_tokens(ids[0][inputs["attention_mask"][0] == 1].tolist())
    # <image> x 16, <bos>, the instruction, a newline: no chat turns.
    assert row[:17] == ["<image>"] * 16 + ["<bos>"] and row[-1] == "\n" and "image" in row[17:-1]


def test_logits_generate_and_our_decoding_equal_hf(paligemma, inputs):
    from vis_steer_lens.explain.decoding import greedy_decode

    model, _, vlm = paligemma
    with torch.no_grad():
        ours = vlm(**inputs)
        theirs = model(**inputs).logits
    assert (ours - theirs).abs().max() <= ATOL
    seen = []
    with vlm.hooks(fwd_hooks=[("blocks.1.hook_resid_post", lambda act, hook: seen.append(1))]):
        tokens = vlm.generate(**inputs, max_new_tokens=6)
    reference = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert torch.equal(tokens, reference) and seen == [1]
    language, tower = vlm.split_inputs(inputs)
    decoded = greedy_decode(
        vlm,
        language,
        image_features=vlm.encode_images(**tower),
        max_new_tokens=6,
        eos_token_ids=vlm.end_of_answer_ids(),
        pad_token_id=vlm.tokenizer.pad_token_id,
    )
    assert torch.equal(decoded, reference)  # 1-based positions and prefix-LM masks, as generate


def test_an_edit_at_every_vision_hook_reaches_the_logits(paligemma, inputs):
    _, _, vlm = paligemma
    with torch.no_grad():
        clean = vlm(**inputs)
        for name in vlm.vision.hook_names():
            assert vlm.reaches_language_model(name)
            torch.manual_seed(0)
            edit = [(name, lambda act, hook: act + 2 * torch.randn_like(act))]
            edited = vlm.run_with_hooks(**inputs, fwd_hooks=edit)
            assert (edited - clean).abs().max() > 1e-6, f"an edit at {name} did not reach the logits"


def test_random_paligemma2_has_the_released_shapes():
    from vis_steer_lens.testing import random_hf_vlm

    model, processor = random_hf_vlm("paligemma2-3b-448", n_vision_layers=1, n_text_layers=1, vocab_size=2048)
    vision, text = model.config.vision_config, model.config.text_config
    assert (vision.hidden_size, vision.image_size, vision.patch_size) == (1152, 448, 14)
    assert (text.model_type, text.hidden_size, text.head_dim) == ("gemma2", 2304, 256)
    image = processor(images=[Image.new("RGB", (500, 400), "red")], text=["caption en"], return_tensors="pt")
    assert image["pixel_values"].shape[-2:] == (448, 448)
    assert int((image["input_ids"] == model.config.image_token_id).sum()) == 1024
