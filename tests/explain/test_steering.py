"""SteeringExplainer on a tiny random VLM with the toy processor: the machinery, not the quality."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import build_tiny_toy_vlm, random_sae

from vis_steer_lens.explain import ResumeMismatchError, SteeringExplainer, clean_explanation
from vis_steer_lens.saes import FeatureIndexError, SAEModelMismatchError

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def vlm():
    return build_tiny_toy_vlm()


@pytest.fixture(scope="module")
def sae():
    return random_sae(d_in=32, d_sae=24, hook_name=HOOK)


def explainer(vlm, sae, **kwargs):
    kwargs.setdefault("coefficient", 40.0)
    kwargs.setdefault("prompt", "toy")
    kwargs.setdefault("max_new_tokens", 8)
    return SteeringExplainer(vlm, sae, **kwargs)


def test_one_row_per_feature_with_metadata(vlm, sae):
    frame = explainer(vlm, sae, batch_size=4).explain([3, 1, 7], progress=False)
    assert frame["feature"].tolist() == [3, 1, 7]
    assert set(frame["method"]) == {"steering"} and set(frame["direction"]) == {"sae"}
    assert set(frame["empty_image"]) == {"white"} and set(frame["prompt_id"]) == {"toy"}
    assert (frame["coefficient"] == 40.0).all() and (frame["seconds"] > 0).all()
    assert frame["sae_id"].nunique() == 1 and frame["model_name"].iloc[0] == "tiny-toy"
    assert frame["raw_generation"].map(lambda text: isinstance(text, str)).all()


def test_batched_equals_one_feature_at_a_time(vlm, sae):
    features = list(range(10))
    batched = explainer(vlm, sae, batch_size=5).explain(features, progress=False)
    single = explainer(vlm, sae, batch_size=1).explain(features, progress=False)
    assert batched["raw_generation"].tolist() == single["raw_generation"].tolist()


def test_prefix_reuse_equals_full_forward(vlm, sae):
    features = list(range(12))
    reused = explainer(vlm, sae, batch_size=6).explain(features, progress=False)
    full = explainer(vlm, sae, batch_size=6, reuse_prefix=False).explain(features, progress=False)
    assert reused["raw_generation"].tolist() == full["raw_generation"].tolist()


@pytest.mark.parametrize(
    "hook", ["blocks.1.hook_resid_pre", "blocks.1.mlp.hook_post", "blocks.1.hook_resid_mid"]
)
def test_prefix_reuse_at_hooks_inside_a_block(vlm, hook):
    width = 64 if "mlp" in hook else 32
    inner = random_sae(d_in=width, d_sae=8, hook_name=hook)
    reused = explainer(vlm, inner, batch_size=4).explain(range(8), progress=False)
    full = explainer(vlm, inner, batch_size=4, reuse_prefix=False).explain(range(8), progress=False)
    assert reused["raw_generation"].tolist() == full["raw_generation"].tolist()


def test_steering_changes_the_answer(vlm, sae):
    steered = explainer(vlm, sae).explain(range(8), progress=False)
    unsteered = explainer(vlm, sae, coefficient=0.0).explain(range(8), progress=False)
    assert unsteered["raw_generation"].nunique() == 1  # the same empty image for every row
    assert steered["raw_generation"].tolist() != unsteered["raw_generation"].tolist()


def test_sentence_end_stops_rows_early(vlm, sae):
    stopped = explainer(vlm, sae, max_new_tokens=30).explain(range(6), progress=False)
    full = explainer(vlm, sae, max_new_tokens=30, stop_at_sentence_end=False).explain(
        range(6), progress=False
    )
    assert stopped["explanation"].tolist() == full["explanation"].tolist()
    for short, long in zip(stopped["raw_generation"], full["raw_generation"], strict=True):
        assert long.startswith(short.rstrip())


def test_controls(vlm, sae):
    features = list(range(6))
    real = explainer(vlm, sae).explain(features, progress=False)
    permuted = explainer(vlm, sae, direction="permuted").explain(features, progress=False)
    random_dir = explainer(vlm, sae, direction="random_norm_matched").explain(features, progress=False)
    assert permuted["direction_feature"].tolist() == [3, 4, 5, 0, 1, 2]
    # Feature f explained with feature (f + 3)'s direction reads what the real run read for f + 3.
    by_feature = dict(zip(real["feature"], real["raw_generation"], strict=True))
    assert permuted["raw_generation"].tolist() == [by_feature[f] for f in [3, 4, 5, 0, 1, 2]]
    assert random_dir["raw_generation"].tolist() != real["raw_generation"].tolist()
    exp = explainer(vlm, sae, direction="random_norm_matched")
    dirs = exp.directions(features, features)
    torch.testing.assert_close(dirs.norm(dim=-1), sae.W_dec[features].norm(dim=-1))
    torch.testing.assert_close(exp.directions(features, features), dirs)  # seeded


def test_empty_images_are_recorded_and_differ(vlm, sae):
    white = explainer(vlm, sae, empty_image="white")
    black = explainer(vlm, sae, empty_image="black")
    zeros = explainer(vlm, sae, empty_image="zeros")
    assert torch.allclose(white._pixels, torch.ones_like(white._pixels))  # normalised white is +1
    assert torch.allclose(black._pixels, -torch.ones_like(black._pixels))
    assert torch.equal(zeros._pixels, torch.zeros_like(zeros._pixels))
    assert set(zeros.explain([0], progress=False)["empty_image"]) == {"zeros"}


def test_positions_restrict_the_steered_patches(vlm, sae):
    everywhere = explainer(vlm, sae).explain(range(4), progress=False)
    nowhere = explainer(vlm, sae, positions=torch.zeros(16, dtype=torch.bool)).explain(
        range(4), progress=False
    )
    unsteered = explainer(vlm, sae, coefficient=0.0).explain(range(4), progress=False)
    assert nowhere["raw_generation"].tolist() == unsteered["raw_generation"].tolist()
    assert everywhere["raw_generation"].tolist() != nowhere["raw_generation"].tolist()
    with pytest.raises(ValueError, match="16 entries"):
        explainer(vlm, sae, positions=torch.ones(9, dtype=torch.bool))


def test_auto_coefficient_sweep(vlm, sae):
    exp = explainer(vlm, sae, coefficient="auto", sweep_multiples=(0.0, 4.0, 16.0), sweep_features=6)
    frame = exp.explain(range(3, 11), progress=False)
    sweep = exp.calibration
    assert sweep["multiple"].tolist() == [0.0, 4.0, 16.0]
    assert sweep["chosen"].sum() == 1
    assert sweep.loc[0, "distinct_fraction"] == pytest.approx(1 / 6)  # no steering: one answer for all
    assert sweep.loc[0, "changed_fraction"] == 0 and not sweep.loc[0, "chosen"]  # the unsteered answer
    assert frame["coefficient"].iloc[0] == pytest.approx(exp.chosen_coefficient)
    assert exp.chosen_coefficient == pytest.approx(sweep[sweep["chosen"]]["coefficient"].iloc[0])
    assert exp.calibration_figure().data


def test_the_sweep_samples_the_explained_features_and_its_rows_are_reused(vlm, sae, monkeypatch):
    exp = explainer(vlm, sae, coefficient="auto", sweep_multiples=(4.0, 16.0), sweep_features=3, batch_size=4)
    steered = []
    generate = exp._generate
    monkeypatch.setattr(exp, "_generate", lambda f, d, c: steered.extend(f) or generate(f, d, c))
    features = [1, 4, 6, 9, 11]
    frame = exp.explain(features, progress=False)
    swept = exp.calibration["explanations"]
    # One unsteered row, 2 x 3 swept rows; the 3 swept rows at the choice are not redone.
    assert len(steered) == 1 + 2 * 3 + len(features) - 3
    assert set(steered[:7]) <= set(features)  # the sample comes from the features explained
    fixed = explainer(vlm, sae, coefficient=exp.chosen_coefficient, batch_size=4).explain(
        features, progress=False
    )
    assert frame["raw_generation"].tolist() == fixed["raw_generation"].tolist()
    assert len(swept) == 2 and all(len(row) == 3 for row in swept)


def test_resume_after_a_crash_loses_and_duplicates_nothing(vlm, sae, tmp_path, monkeypatch):
    out = tmp_path / "steering.jsonl"
    features = list(range(12))
    reference = explainer(vlm, sae, batch_size=4).explain(features, progress=False)

    crashing = explainer(vlm, sae, batch_size=4)
    real_batch = crashing._explain_batch
    calls = {"n": 0}

    def crash_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real_batch(*args, **kwargs)

    monkeypatch.setattr(crashing, "_explain_batch", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        crashing.explain(features, out=out, progress=False)
    lines = out.read_text().splitlines()
    assert len(lines) == 8
    with open(out, "a") as f:  # a torn half line, as if killed mid-write
        f.write('{"feature": 99, "expl')

    resumed = explainer(vlm, sae, batch_size=4)
    seen = []
    real = resumed._explain_batch
    monkeypatch.setattr(resumed, "_explain_batch", lambda f, d: seen.append(list(f)) or real(f, d))
    frame = resumed.explain(features, out=out, progress=False)
    assert seen == [[8, 9, 10, 11]]
    assert frame["feature"].tolist() == features
    assert frame["raw_generation"].tolist() == reference["raw_generation"].tolist()
    stored = [json.loads(line)["feature"] for line in out.read_text().splitlines()]
    assert sorted(stored) == features


def test_resume_refuses_other_settings(vlm, sae, tmp_path):
    out = tmp_path / "steering.jsonl"
    explainer(vlm, sae).explain([0, 1], out=out, progress=False)
    with pytest.raises(ResumeMismatchError, match="coefficient"):
        explainer(vlm, sae, coefficient=5.0).explain([0, 1], out=out, progress=False)
    other = random_sae(d_in=32, d_sae=24, hook_name=HOOK, seed=1)
    with pytest.raises(ResumeMismatchError, match="sae_id"):
        explainer(vlm, other).explain([0, 1], out=out, progress=False)
    with pytest.raises(FileExistsError):
        explainer(vlm, sae).explain([0, 1], out=out, resume=False, progress=False)


def test_bad_input(vlm, sae):
    with pytest.raises(FeatureIndexError, match="d_sae=24"):
        explainer(vlm, sae).explain([24], progress=False)
    with pytest.raises(ValueError, match="finite"):
        explainer(vlm, sae, coefficient=float("nan"))
    with pytest.raises(ValueError, match="empty_image"):
        explainer(vlm, sae, empty_image="purple")
    with pytest.raises(ValueError, match="direction"):
        explainer(vlm, sae, direction="backwards")
    with pytest.raises(SAEModelMismatchError):
        explainer(vlm, random_sae(d_in=48, d_sae=4, hook_name=HOOK))
    with pytest.raises(KeyError, match="Unknown prompt"):
        explainer(vlm, sae, prompt="shouting")


def test_clean_explanation():
    prefix = "The highlighted element in the image is a"
    assert (
        clean_explanation("**The highlighted element in the image is a red circle.** More.", prefix)
        == "red circle"
    )
    assert clean_explanation("the highlighted element in the image is a blue ring", prefix) == "blue ring"
    assert clean_explanation("Here is one:\nThe highlighted element in the image is a cat.", prefix) == "cat"
    assert clean_explanation("dotted square . extra", prefix) == "dotted square"


def test_a_coefficient_that_overflows_is_refused_naming_the_feature(vlm, sae):
    with pytest.raises(ValueError, match=r"non-finite.*feature\(s\) 2"):
        explainer(vlm, sae, coefficient=-1e30).explain([2], progress=False)


def test_on_text_streams_each_answer_token_by_token(vlm, sae):
    features = list(range(8))
    streamed: dict[int, list[str]] = {}
    exp = explainer(vlm, sae, batch_size=3, stop_at_sentence_end=False)
    frame = exp.explain(
        features, progress=False, on_text=lambda f, text: streamed.setdefault(f, []).append(text)
    )
    plain = explainer(vlm, sae, batch_size=3, stop_at_sentence_end=False).explain(features, progress=False)
    assert frame["raw_generation"].tolist() == plain["raw_generation"].tolist()  # streaming changes nothing
    for feature, raw in zip(frame["feature"], frame["raw_generation"], strict=True):
        texts = streamed[feature]
        assert texts[-1] == raw  # the last text is the answer
        # One call per decoded token, each text decoding the tokens so far.
        assert 1 <= len(texts) <= exp.max_new_tokens
        assert all(len(a) <= len(b) for a, b in zip(texts, texts[1:], strict=False))
    assert max(len(t) for t in streamed.values()) > 1, "no answer took more than one token"
    assert exp._on_text is None  # the callback does not outlive the call


def test_noise_is_a_seeded_image_of_uniform_pixels(vlm, sae):
    noise = explainer(vlm, sae, empty_image="noise")
    again = explainer(vlm, sae, empty_image="noise")
    assert torch.equal(noise._pixels, again._pixels)  # the same noise in every run
    # Spread over the normalised range, unlike any flat image.
    assert noise._pixels.std() > 0.05 and noise._pixels.min() < 0 < noise._pixels.max()


@pytest.mark.parametrize("reuse_prefix", [True, False])
def test_steering_on_zero_or_the_reconstruction_at_the_hook(vlm, sae, reuse_prefix):
    directions = sae.W_dec[:3].detach()

    def soft(**kwargs):
        steer = explainer(vlm, sae, reuse_prefix=reuse_prefix, **kwargs)
        with torch.no_grad():
            return steer.steered_image_features(directions, [40.0] * 3)

    # On zeros at the hook, the empty image below it no longer matters: the direction alone.
    assert torch.allclose(soft(steer_on="zero"), soft(steer_on="zero", empty_image="black"), atol=1e-5)
    assert not torch.allclose(soft(), soft(empty_image="black"), atol=1e-3)
    # On the reconstruction: the full tower with decode(encode(x)) + direction put in at the hook by hand.
    steer = explainer(vlm, sae)
    delta = 40.0 * directions.unsqueeze(1)  # [3, 1, d_in]

    def replace(act, hook):
        return sae.decode(sae.encode(act)) + delta.to(act.dtype)

    with torch.no_grad(), vlm.hooks(fwd_hooks=[(HOOK, replace)]):
        expected = vlm.encode_images(steer._pixels.expand(3, -1, -1, -1))
    recon = soft(steer_on="reconstruction")
    assert torch.allclose(recon, expected, atol=1e-4) and not torch.allclose(recon, soft(), atol=1e-4)
    with pytest.raises(ValueError, match="steer_on must be one of"):
        explainer(vlm, sae, steer_on="sae")
