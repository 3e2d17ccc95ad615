"""greedy_decode against Hugging Face greedy generate: the same tokens, with finished rows retired."""

from __future__ import annotations

import pytest
import torch
from conftest import build_tiny_gemma3, image_prompt_ids, tiny_gemma3_ids
from transformers import StoppingCriteria

from vis_steer_lens import HookedVLM
from vis_steer_lens.explain import SteeringExplainer
from vis_steer_lens.explain.decoding import greedy_decode
from vis_steer_lens.explain.text import SentenceEndStop

PAD = 0
NEVER = 296  # a token id that no test expects the random model to pick as its EOS


class StopAfter(StoppingCriteria):
    """Ends a row after ``1 + last prompt token % 5`` new tokens: by its own tokens, not its index."""

    def __init__(self, prompt_length: int):
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        wanted = 1 + input_ids[:, self.prompt_length - 1] % 5
        return input_ids.shape[1] - self.prompt_length >= wanted


@pytest.fixture(scope="module")
def tiny():
    """The conftest tiny Gemma 3: two sliding-window text layers, window 64."""
    return HookedVLM.from_hf(build_tiny_gemma3(seed=6))


@pytest.fixture(scope="module")
def tiny_hybrid():
    """A sliding-window and a full-attention text layer, window 6 (prompts are 10+ tokens), so
    both cache layer types are retired, the sliding one past its window."""
    from transformers import Gemma3ForConditionalGeneration

    from vis_steer_lens.adapters import get_adapter
    from vis_steer_lens.testing import perturb_constant_parameters

    config = build_tiny_gemma3().config
    config.text_config.layer_types = ["sliding_attention", "full_attention"]
    config.text_config.sliding_window = 6
    torch.manual_seed(7)
    model = Gemma3ForConditionalGeneration(config).eval()
    adapter = get_adapter("gemma3")
    perturb_constant_parameters([adapter.tower(model), adapter.projector(model)], seed=7)
    return HookedVLM.from_hf(model)


def _prompt(vlm, batch: int, seed: int = 0):
    inputs = image_prompt_ids(batch=batch)
    torch.manual_seed(seed)
    with torch.no_grad():
        features = vlm.encode_images(torch.randn(batch, 3, 32, 32))
    return inputs, features


def _reference(vlm, inputs, features, max_new_tokens, eos, stop=None):
    with torch.no_grad():
        return vlm.generate(
            **inputs,
            image_features=features,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos,
            pad_token_id=PAD,
            stopping_criteria=stop,
        )


def _new_lengths(tokens: torch.Tensor, prompt_length: int, pad: int = PAD) -> list[int]:
    """New tokens per row before its padding (the test models never pick the pad id themselves)."""
    return [int((row != pad).sum()) for row in tokens[:, prompt_length:]]


@pytest.mark.parametrize("model", ["tiny", "tiny_hybrid"])
def test_equals_generate_without_a_stop(model, request):
    vlm = request.getfixturevalue(model)
    inputs, features = _prompt(vlm, batch=4)
    ref = _reference(vlm, inputs, features, 8, [NEVER])
    ours = greedy_decode(vlm, inputs, features, 8, [NEVER], PAD)
    assert torch.equal(ours, ref)
    # The raw Hugging Face model works too, with the soft tokens passed the same way.
    assert torch.equal(greedy_decode(vlm.hf_model, inputs, features, 8, NEVER, PAD), ref)


@pytest.mark.parametrize("model", ["tiny", "tiny_hybrid"])
def test_equals_generate_when_rows_hit_eos_at_different_steps(model, request):
    vlm = request.getfixturevalue(model)
    inputs, features = _prompt(vlm, batch=5)
    prompt_length = inputs["input_ids"].shape[1]
    free = _reference(vlm, inputs, features, 10, [NEVER])
    # Two "EOS" ids the random model does emit: row 0's 2nd token and row 3's 6th.
    eos = [int(free[0, prompt_length + 1]), int(free[3, prompt_length + 5])]
    ref = _reference(vlm, inputs, features, 10, eos)
    ours, finished = greedy_decode(vlm, inputs, features, 10, eos, PAD, return_finished=True)
    assert torch.equal(ours, ref)
    lengths = _new_lengths(ours, prompt_length)
    assert len(set(lengths)) >= 2  # rows really left the batch at different steps
    ended = [bool(torch.isin(row, torch.tensor(eos)).any()) for row in ours[:, prompt_length:]]
    assert finished.tolist() == ended


@pytest.mark.parametrize("model", ["tiny", "tiny_hybrid"])
def test_equals_generate_with_a_row_wise_stop(model, request):
    vlm = request.getfixturevalue(model)
    inputs, features = _prompt(vlm, batch=6)  # last prompt tokens 12..17: stops after 3, 4, 5, 1, 2, 3
    prompt_length = inputs["input_ids"].shape[1]
    stop = StopAfter(prompt_length)
    ref = _reference(vlm, inputs, features, 4, [NEVER], [stop])
    ours, finished = greedy_decode(vlm, inputs, features, 4, [NEVER], PAD, stop, return_finished=True)
    assert torch.equal(ours, ref)
    assert _new_lengths(ours, prompt_length) == [3, 4, 4, 1, 2, 3]
    # Row 1 ends at the cap by its stop (finished); row 2 is cut off there (not finished).
    assert finished.tolist() == [True, True, False, True, True, True]


def test_left_padded_rows_are_retired_with_their_mask_and_positions(tiny_hybrid):
    vlm = tiny_hybrid
    _, features = _prompt(vlm, batch=4)
    # Rows 0 and 2 get two more text tokens after <bos>; rows 1 and 3 are left-padded to match.
    rows = image_prompt_ids(batch=4)["input_ids"].tolist()
    input_ids = torch.tensor(
        [row[:1] + [20 + i, 21] + row[1:] if i % 2 == 0 else [PAD, PAD] + row for i, row in enumerate(rows)]
    )
    inputs = {
        "input_ids": input_ids,
        "attention_mask": (input_ids != PAD).long(),
        "token_type_ids": (input_ids == tiny_gemma3_ids()["image"]).long(),
    }
    prompt_length = inputs["input_ids"].shape[1]
    stop = StopAfter(prompt_length)
    ref = _reference(vlm, inputs, features, 6, [NEVER], [stop])
    ours = greedy_decode(vlm, inputs, features, 6, [NEVER], PAD, stop)
    assert torch.equal(ours, ref)
    assert len(set(_new_lengths(ours, prompt_length))) >= 3
    # Without a mask, both take the pad tokens for padding.
    unmasked = {k: v for k, v in inputs.items() if k != "attention_mask"}
    assert torch.equal(greedy_decode(vlm, unmasked, features, 6, [NEVER], PAD, stop), ref)
    assert torch.equal(_reference(vlm, unmasked, features, 6, [NEVER], [stop]), ref)


def test_bad_arguments(tiny):
    inputs, features = _prompt(tiny, batch=2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy_decode(tiny, inputs, features, 0, [NEVER], PAD)
    with pytest.raises(ValueError, match="image_features"):
        greedy_decode(tiny, {**inputs, "pixel_values": torch.zeros(2, 3, 32, 32)}, None, 4, [NEVER], PAD)
    with pytest.raises(ValueError, match="attention_mask"):
        greedy_decode(
            tiny, {**inputs, "attention_mask": inputs["attention_mask"][:, 1:]}, features, 4, 1, PAD
        )


def test_decodes_without_autograd_even_when_the_caller_has_it_on(tiny):
    inputs, features = _prompt(tiny, batch=2)
    seen = []
    handle = tiny.hf_model.register_forward_hook(lambda *_: seen.append(torch.is_grad_enabled()))
    try:
        with torch.enable_grad():
            greedy_decode(tiny, inputs, features, 3, [NEVER], PAD)
    finally:
        handle.remove()
    assert seen and not any(seen)  # every forward pass (prefill and steps) ran without autograd


# ---------------------------------------------------------------- the shipped toy model, steered

# At twice the mean patch norm most answers are one word and a few are full sentences.
TOY_FEATURES = list(range(32))


@pytest.fixture(scope="module")
def toy_steering():
    from vis_steer_lens import toy

    bundle = toy.load()
    explainer = SteeringExplainer(bundle.vlm, bundle.sae, coefficient=1.0, prompt="toy", max_new_tokens=40)
    coefficient = 2.0 * explainer.patch_norm()
    with torch.no_grad():
        features = explainer.steered_image_features(
            explainer.directions(TOY_FEATURES, TOY_FEATURES), [coefficient] * len(TOY_FEATURES)
        )
    inputs = {k: v.expand(len(TOY_FEATURES), -1) for k, v in explainer._inputs.items()}
    return bundle.vlm, explainer, inputs, features


def _toy_decode(explainer, vlm, inputs, features):
    prompt_length = inputs["input_ids"].shape[1]
    stop = explainer._stopping_criteria(prompt_length)
    pad = explainer._tokenizer.pad_token_id
    return greedy_decode(vlm, inputs, features, explainer.max_new_tokens, explainer._eos, pad, stop)


def test_toy_steered_equals_generate(toy_steering):
    vlm, explainer, inputs, features = toy_steering
    prompt_length = inputs["input_ids"].shape[1]
    tokenizer = explainer._tokenizer
    with torch.no_grad():
        ref = vlm.generate(
            **inputs,
            image_features=features,
            max_new_tokens=explainer.max_new_tokens,
            stopping_criteria=[
                SentenceEndStop(tokenizer, prompt_length, explainer.prompt.prefix("steering"))
            ],
            eos_token_id=explainer._eos,
            pad_token_id=tokenizer.pad_token_id,
        )
    ours = _toy_decode(explainer, vlm, inputs, features)
    assert torch.equal(ours, ref)
    lengths = _new_lengths(ours, prompt_length, tokenizer.pad_token_id)
    assert len(set(lengths)) >= 3  # answers of different lengths: rows left at different steps


def test_toy_batch_equals_each_row_alone(toy_steering):
    vlm, explainer, inputs, features = toy_steering
    pad = explainer._tokenizer.pad_token_id
    batched = _toy_decode(explainer, vlm, inputs, features)
    lengths = _new_lengths(batched, inputs["input_ids"].shape[1], pad)
    # One row per answer length, the longest included, each decoded on its own.
    picked = sorted({n: i for i, n in reversed(list(enumerate(lengths)))}.values())
    assert len(picked) >= 3
    for i in picked:
        alone = _toy_decode(explainer, vlm, {k: v[i : i + 1] for k, v in inputs.items()}, features[i : i + 1])
        padded = torch.full_like(batched[i], pad)
        padded[: alone.shape[1]] = alone[0]
        assert torch.equal(batched[i], padded), f"feature {TOY_FEATURES[i]}"


def test_prefill_masks_equal_the_ones_transformers_builds(tiny_hybrid):
    """The prefill's masks, built from token_type_ids, equal transformers' own (window 6 < prompt)."""
    inputs = image_prompt_ids(batch=2, mm_tokens=4, text=(10, 11, 12, 13, 14, 15))
    hf_model = tiny_hybrid.hf_model
    captured = {}

    def capture(module, args, kwargs):
        captured.update(kwargs["attention_mask"])

    handle = hf_model.model.language_model.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with torch.no_grad():
            hf_model(input_ids=inputs["input_ids"], token_type_ids=inputs["token_type_ids"])
    finally:
        handle.remove()
    ours = tiny_hybrid.adapter.prefill_masks(hf_model, inputs)
    assert set(ours) == set(captured) == {"full_attention", "sliding_attention"}
    seq = inputs["input_ids"].shape[1]
    assert seq > 6  # the window cuts into the prompt
    for kind, mask in captured.items():
        assert mask is not None and mask.dtype == torch.bool, kind
        torch.testing.assert_close(ours[kind], mask.expand(2, 1, seq, seq), msg=kind)
    # Image tokens see the whole image; <bos> and <boi>, before it, see none of it.
    image = inputs["token_type_ids"][0].bool()
    full = ours["full_attention"][0, 0]
    assert bool(full[image][:, image].all()) and not bool(full[:2][:, image].any())
