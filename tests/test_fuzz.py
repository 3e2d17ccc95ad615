"""Property-based fuzzing of the public steering and mining API on a tiny random Gemma 3.

Whatever the hook name, feature ids, coefficient or patch positions, a call either returns
finite results or raises one of the library's own error types (``ValueError`` / ``KeyError``
subclasses, the convention in DESIGN.md) with a message; never a crash from deep inside torch,
and never NaN explanations or maps.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vis_steer_lens import SteeringExplainer, mine_top_activations
from vis_steer_lens.testing import tiny_sae, tiny_vlm

LIBRARY_ERRORS = (ValueError, KeyError)
FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)

VLM = tiny_vlm("gemma3", seed=5)
N_LAYERS = VLM.vision.cfg.n_layers
N_PATCHES = VLM.vision.cfg.n_patches
D_SAE = 16
SAE = tiny_sae(VLM, "blocks.0.hook_resid_post", d_sae=D_SAE, k=3)
IMAGES = [torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(5)]

feature_ids = st.one_of(
    st.integers(min_value=-3, max_value=D_SAE + 3),
    st.lists(st.integers(min_value=-2, max_value=D_SAE + 2), max_size=4),
    st.sampled_from(["0:3", "5:5", "3:1", "", "1,2,2", "x", "0:1e9", None]),
)
coefficients = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -1e30, 1e30, 1e300, 5.0, "auto", "loud"]),
    st.dictionaries(st.integers(0, D_SAE - 1), st.floats(allow_nan=True, allow_infinity=True), max_size=3),
)
positions = st.one_of(
    st.none(),
    st.lists(st.booleans(), min_size=0, max_size=N_PATCHES + 2).map(torch.tensor),
)
hook_names = st.one_of(
    st.builds(
        "blocks.{}.{}".format,
        st.integers(min_value=-2, max_value=N_LAYERS + 1),
        st.sampled_from(["hook_resid_post", "hook_resid_pre", "hook_mlp_out", "attn.hook_z", "hook_nope"]),
    ),
    st.text(max_size=30),
)


def _check_raises_ours(call):
    try:
        return call()
    except LIBRARY_ERRORS as err:
        assert str(err), f"{type(err).__name__} without a message"
        return None


@FUZZ
@given(features=feature_ids, coefficient=coefficients, mask=positions)
def test_steering_returns_finite_results_or_raises_ours(features, coefficient, mask):
    def call():
        explainer = SteeringExplainer(
            VLM,
            SAE,
            coefficient=coefficient,
            positions=mask,
            max_new_tokens=2,
            batch_size=4,
            sweep_features=2,
        )
        return explainer.explain(features, progress=False)

    frame = _check_raises_ours(call)
    if frame is not None:
        assert frame["explanation"].map(lambda text: isinstance(text, str)).all()
        assert all(math.isfinite(c) for c in frame["coefficient"])


@FUZZ
@given(
    features=st.one_of(st.none(), st.lists(st.integers(-2, D_SAE + 2), max_size=4)),
    k=st.integers(-1, 7),
    batch_size=st.integers(-1, 6),
    rank_by=st.sampled_from(["max", "mean", "median"]),
    hook_name=st.one_of(st.none(), hook_names),
)
def test_mining_returns_finite_results_or_raises_ours(features, k, batch_size, rank_by, hook_name):
    sae = SAE
    if hook_name is not None:
        sae = tiny_sae(VLM, "blocks.0.hook_resid_post", d_sae=D_SAE, k=3)
        sae.cfg.metadata.hook_name = hook_name

    def call():
        return mine_top_activations(
            VLM, sae, IMAGES, k=k, batch_size=batch_size, rank_by=rank_by, features=features, progress=False
        )

    mined = _check_raises_ours(call)
    if mined is not None:
        kept = mined.top_image_ids >= 0
        assert torch.isfinite(mined.top_scores[kept]).all() and torch.isfinite(mined.top_maps).all()
        assert torch.isfinite(mined.act_sum).all()


@pytest.mark.parametrize("name", ["blocks.99.hook_resid_post", "blocks.0.hook_nope", ""])
def test_a_bad_hook_name_is_a_key_error_naming_it(name):
    sae = tiny_sae(VLM, "blocks.0.hook_resid_post", d_sae=D_SAE, k=3)
    sae.cfg.metadata.hook_name = name
    with pytest.raises(LIBRARY_ERRORS) as caught:
        mine_top_activations(VLM, sae, IMAGES, progress=False)
    assert repr(name) in str(caught.value) or "hook" in str(caught.value)
