"""AUROC, pooled AUROC and bootstrap CIs against brute-force references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from vis_steer_lens.evaluate import auroc, auroc_matrix, bootstrap_mean_ci, global_auroc, method_label


def brute_force_auroc(pos, neg) -> float:
    """Average over all (positive, negative) pairs of 1 / 0.5 / 0."""
    pairs = list(itertools.product(pos, neg))
    return sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)


def test_known_cases():
    assert auroc([3, 4, 5], [0, 1, 2]) == 1.0
    assert auroc([0, 1, 2], [3, 4, 5]) == 0.0
    assert auroc([1, 1, 1], [1, 1]) == 0.5
    assert auroc([2, 0], [1]) == 0.5
    assert math.isnan(auroc([], [1, 2]))
    assert math.isnan(auroc([1.0], [float("nan")]))


def test_matches_brute_force_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        pos = rng.integers(0, 5, size=rng.integers(1, 8)).astype(float)
        neg = rng.integers(0, 5, size=rng.integers(1, 8)).astype(float)
        assert auroc(pos, neg) == pytest.approx(brute_force_auroc(pos, neg))


def test_auroc_matrix_matches_auroc():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 4, size=(30, 5)).astype(float)
    labels = rng.random((30, 3)) < 0.4
    labels[:, 2] = False  # a label that never holds
    table = auroc_matrix(scores, labels)
    assert table.shape == (3, 5)
    for c, f in itertools.product(range(2), range(5)):
        assert table[c, f] == pytest.approx(auroc(scores[labels[:, c], f], scores[~labels[:, c], f]))
    assert np.isnan(table[2]).all()


def test_global_auroc_pools_raw_values():
    # Feature A fires big, feature B small: each separates perfectly on its own, but pooled, A's
    # negatives (5) beat B's positives (1), as in the authors' pooled evaluation.
    pos = {"a": [10, 11], "b": [1, 1]}
    neg = {"a": [5, 5], "b": [0, 0]}
    assert auroc(pos["a"], neg["a"]) == 1.0 and auroc(pos["b"], neg["b"]) == 1.0
    expected = brute_force_auroc([10, 11, 1, 1], [5, 5, 0, 0])
    assert global_auroc(pos, neg) == pytest.approx(expected) == pytest.approx(0.75)
    assert global_auroc([[10, 11], [1, 1]], [[5, 5], [0, 0]]) == pytest.approx(0.75)
    assert math.isnan(global_auroc([], []))


def test_bootstrap_ci_contains_mean_and_is_deterministic():
    values = [0.2, 0.9, 0.5, float("nan"), 0.7, 0.4]
    mean, lo, hi = bootstrap_mean_ci(values, n_boot=500, seed=3)
    assert mean == pytest.approx(np.nanmean(values))
    assert lo <= mean <= hi and lo < hi
    assert bootstrap_mean_ci(values, n_boot=500, seed=3) == (mean, lo, hi)
    assert bootstrap_mean_ci([0.5]) == (0.5, 0.5, 0.5)
    assert all(math.isnan(v) for v in bootstrap_mean_ci([float("nan")]))
    with pytest.raises(ValueError, match="level"):
        bootstrap_mean_ci(values, level=1.5)


def test_method_label():
    assert method_label("steering", "sae") == "steering"
    assert method_label("steering", "random_norm_matched") == "steering (random direction)"
    assert method_label("hybrid", "permuted") == "hybrid (permuted direction)"
