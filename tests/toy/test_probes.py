"""Probes on the shipped toy tower: colour sits in the object's own patch, linearly."""

from __future__ import annotations

import pytest
import torch

from vis_steer_lens.toy import load, probe_accuracy


@pytest.fixture(scope="module")
def vlm():
    torch.set_num_threads(2)
    return load().vlm


def test_colour_is_linear_in_the_objects_own_patch(vlm):
    table = probe_accuracy(vlm, "blocks.0.hook_resid_post", "color", n_train=400, n_test=150, seed=3)
    assert list(table[["input", "probe"]].itertuples(index=False, name=None)) == [
        ("own patch", "linear"),
        ("own patch", "mlp"),
        ("3x3 window", "linear"),
        ("3x3 window", "mlp"),
    ]
    own_linear = table.set_index(["input", "probe"]).loc[("own patch", "linear"), "accuracy"]
    chance = float(table["chance"].iloc[0])
    # Nine colours: chance is about 0.11-0.2; the patch embedding alone carries colour.
    assert chance < 0.3
    assert own_linear >= 0.9, table


def test_probe_rejects_unknown_categories_and_empty_splits(vlm):
    with pytest.raises(ValueError, match="Unknown category 'colour'"):
        probe_accuracy(vlm, "blocks.0.hook_resid_post", "colour")
    with pytest.raises(ValueError, match="positive"):
        probe_accuracy(vlm, "blocks.0.hook_resid_post", "shape", n_train=0)
