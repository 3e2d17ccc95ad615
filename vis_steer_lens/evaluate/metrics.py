"""Rank statistics shared by the scorers: AUROC, the paper's pooled (global) AUROC, bootstrap CIs.

AUROC here is the Mann–Whitney statistic: the probability that a random positive scores above a
random negative, ties counting one half. It needs no thresholds and no sklearn.

Global AUROC (the paper's headline number): every feature contributes its own positives (its
activations on the images drawn from its explanation) and its own negatives (its activations on
reference images); all features' positives are pooled into one set, all negatives into another, and
one AUROC is computed between the two pools. The authors' code (``evaluation/image_gen_eval.py`` of
HPAI-BSC/vision-interp) pools raw activations, so features live on different scales: a positive of a
strongly firing feature is compared with negatives of weakly firing ones. The number therefore mixes
"does the explanation make the feature fire" with "how large are this feature's activations"; it is
reproduced as published, and the per-feature mean AUROC (scale-free) is reported beside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

from vis_steer_lens.explain.labels import method_label  # noqa: F401 - re-exported for the scorers


def _clean(values: Any) -> np.ndarray:
    """1-D float array without NaNs."""
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    return array[~np.isnan(array)]


def auroc(positives: Any, negatives: Any) -> float:
    """Area under the ROC curve separating positives from negatives (Mann–Whitney, ties = 0.5).

    Args:
        positives: Scores of positive examples, any array-like ``[n_pos]`` (NaNs are dropped).
        negatives: Scores of negative examples ``[n_neg]`` (NaNs are dropped).

    Returns:
        P(positive > negative) + 0.5 · P(positive == negative); NaN when either side is empty.
    """
    pos, neg = _clean(positives), _clean(negatives)
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([pos, neg]))  # average ranks give ties half credit
    u_statistic = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2
    return float(u_statistic / (pos.size * neg.size))


def _as_groups(groups: Mapping[Any, Any] | Iterable[Any]) -> list[np.ndarray]:
    values = groups.values() if isinstance(groups, Mapping) else groups
    return [_clean(v) for v in values]


def global_auroc(
    per_feature_pos: Mapping[Any, Any] | Sequence[Any], per_feature_neg: Mapping[Any, Any] | Sequence[Any]
) -> float:
    """The paper's pooled AUROC: all features' positives against all features' negatives.

    Raw activations are pooled without per-feature normalisation, as in the authors' evaluation
    (see the module docstring for what that implies). Features with the same number of negatives
    weigh the same; the pairing of features between the two arguments does not matter.

    Args:
        per_feature_pos: Per feature, its activations on its generated images (a list of arrays,
            or a dict keyed by feature).
        per_feature_neg: Per feature, its activations on the reference images.

    Returns:
        One AUROC over the pooled sets; NaN when either pool is empty.
    """
    pos = _as_groups(per_feature_pos)
    neg = _as_groups(per_feature_neg)
    pooled_pos = np.concatenate(pos) if pos else np.empty(0)
    pooled_neg = np.concatenate(neg) if neg else np.empty(0)
    return auroc(pooled_pos, pooled_neg)


def bootstrap_mean_ci(
    values: Any, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Mean of ``values`` with a percentile-bootstrap confidence interval.

    Args:
        values: Array-like ``[n]``; NaNs are dropped first.
        n_boot: Bootstrap resamples.
        seed: Seed of the resampling (same seed, same interval).
        level: Coverage of the interval, in (0, 1).

    Returns:
        ``(mean, lo, hi)``; all NaN for no values, ``(v, v, v)`` for one value.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}.")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}.")
    array = _clean(values)
    if array.size == 0:
        nan = float("nan")
        return nan, nan, nan
    mean = float(array.mean())
    if array.size == 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    samples = rng.choice(array, size=(n_boot, array.size), replace=True).mean(axis=1)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(samples, [alpha, 1.0 - alpha])
    # Percentile intervals can miss the sample mean by rounding for tiny samples; keep it inside.
    return mean, float(min(lo, mean)), float(max(hi, mean))


def auroc_matrix(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUROC of every (label column, score column) pair at once.

    Args:
        scores: ``[n, n_scores]`` float scores (e.g. feature activations per image).
        labels: ``[n, n_labels]`` booleans (e.g. "image contains concept").

    Returns:
        ``[n_labels, n_scores]`` AUROCs; NaN for a label that is always or never true.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    if scores.ndim != 2 or labels.ndim != 2 or scores.shape[0] != labels.shape[0]:
        raise ValueError(
            f"Expected scores [n, n_scores] and labels [n, n_labels], got {scores.shape} and {labels.shape}."
        )
    ranks = rankdata(scores, axis=0)  # [n, n_scores], ties averaged
    n_pos = labels.sum(axis=0).astype(np.float64)  # [n_labels]
    n_neg = labels.shape[0] - n_pos
    rank_sums = labels.T.astype(np.float64) @ ranks  # [n_labels, n_scores]
    with np.errstate(invalid="ignore", divide="ignore"):
        result = (rank_sums - (n_pos * (n_pos + 1) / 2)[:, None]) / (n_pos * n_neg)[:, None]
    result[(n_pos == 0) | (n_neg == 0)] = np.nan
    return result
