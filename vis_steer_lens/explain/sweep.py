"""The steering coefficient sweep's rule: which multiple of the hook's patch norm to steer at.

A multiple's score is the share of answers that steering changes (from the unsteered answer)
times the share that are not flagged; the multiples near the best score form the working range,
and the one nearest its geometric centre is chosen (:func:`sweep_table`). The rule and the sample
size are measured by ``benchmarks/coefficient_sweep_stability.py``; a run folder applies it once
(:mod:`vis_steer_lens.explain.calibration`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

#: Multiples of the hook's mean patch norm that the sweep tries.
DEFAULT_MULTIPLES = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
#: Features the sweep explains at each multiple. On the toy world, 20 seeds' samples of 32 or
#: more live features all chose the multiple the whole SAE chooses (8x), from the live features of
#: 0:64, of 0:256 or of all; samples of 16 agreed in 19 of 20 (see
#: ``benchmarks/coefficient_sweep_stability.py``). 7 x 64 = 448 steered rows, once per run.
DEFAULT_SAMPLE_SIZE = 64
#: Share of the best sweep score that puts a multiple in the working range (:func:`sweep_table`).
WORKING_SHARE = 0.8


def sample_features(pool: Sequence[int], size: int, seed: int = 0) -> list[int]:
    """A seeded sample of ``size`` features of ``pool`` (all of them if it is smaller), sorted."""
    pool = sorted(int(f) for f in pool)
    if size >= len(pool):
        return pool
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:size]
    return sorted(pool[i] for i in order.tolist())


def sweep_table(
    rows_by_multiple: Mapping[float, Sequence[Mapping[str, Any]]],
    patch_norm: float,
    null_answer: str | None = None,
    working_share: float = WORKING_SHARE,
) -> pd.DataFrame:
    """Score each multiple of a sweep from its steered rows, and choose one.

    A multiple's score is the share of answers that differ from the unsteered answer
    (``null_answer``: what the model says of the empty image, "blank" on the toy world) times the
    share that are not flagged (empty, unfinished or repeating; see
    :func:`vis_steer_lens.explain.text.explanation_and_flag`). Too small a coefficient leaves the
    answer unchanged, too large a one breaks it. The multiples scoring at least
    ``working_share`` of the best form the working range, and the chosen multiple is the one
    nearest its geometric centre: a plateau's argmax moves with every sample, its centre does not
    (``benchmarks/coefficient_sweep_stability.py``).

    Args:
        rows_by_multiple: ``multiple -> rows``, each row with ``explanation`` and ``flag``, the
            same features in every multiple.
        patch_norm: The hook's mean patch norm on the empty image (the unit of the multiples).
        null_answer: The unsteered answer (``None``: no answer counts as unchanged).
        working_share: Share of the best score that puts a multiple in the working range.

    Returns:
        One row per multiple: ``multiple, coefficient, changed_fraction, degenerate_fraction,
        distinct_fraction, score, working, chosen, explanations``.
    """
    records = []
    for multiple, rows in rows_by_multiple.items():
        explanations = [row["explanation"] for row in rows]
        n = max(len(rows), 1)
        changed = sum(text != null_answer for text in explanations) / n
        degenerate = sum(row.get("flag") is not None for row in rows) / n
        records.append(
            {
                "multiple": float(multiple),
                "coefficient": float(multiple) * patch_norm,
                "changed_fraction": changed,
                "degenerate_fraction": degenerate,
                "distinct_fraction": len(set(explanations)) / n,
                "score": changed * (1 - degenerate),
                "explanations": explanations,
            }
        )
    table = pd.DataFrame(records)
    scores = table["score"].to_numpy()
    multiples = table["multiple"].to_numpy()
    positive = multiples > 0  # the centre is taken on a log scale; a multiple of 0 is never chosen
    best = scores[positive].max() if positive.any() else 0.0
    working = positive & (scores >= working_share * best) if best > 0 else np.zeros_like(positive)
    if not working.any():  # nothing changes the answer: the largest multiple tried
        working = multiples == multiples.max()
    table["working"] = working
    logs = np.log(np.where(positive, multiples, 1.0))
    centre = logs[working].mean()
    distance = np.where(working, np.abs(logs - centre), np.inf)
    best = int(distance.argmin())  # the first minimum: the smaller multiple on ties
    table["chosen"] = [i == best for i in range(len(table))]
    return table


def select_by_score(
    table: pd.DataFrame, rows_by_multiple: Mapping[float, Sequence[Mapping[str, Any]]], select_by: Any
) -> pd.DataFrame:
    """Re-choose a sweep's multiple by a scorer instead of the distinct-answers rule.

    Args:
        table: :func:`sweep_table` output (one row per multiple, in ``rows_by_multiple``'s order).
        rows_by_multiple: ``multiple -> rows`` of the sweep (``feature``, ``explanation``, ...).
        select_by: ``rows -> float``, higher is better (e.g. :func:`scorer_selector`).

    Returns:
        ``table`` with ``selected_score`` per multiple and ``chosen`` moved to the best-scoring
        multiple (the smaller on ties; NaN scores never win unless all are NaN).
    """
    table = table.copy()
    scores = [float(select_by(pd.DataFrame(list(rows)))) for rows in rows_by_multiple.values()]
    table["selected_score"] = scores
    values = np.array([-np.inf if np.isnan(v) else v for v in scores])
    best = int(values.argmax())  # the first maximum: the smaller multiple on ties
    table["chosen"] = [i == best for i in range(len(table))]
    return table


def scorer_selector(scorer: Any, column: str | None = None):
    """A ``select_by`` from a per-explanation scorer: the mean of its score column over the rows.

    Args:
        scorer: Anything with ``score(explanations, progress=False) -> DataFrame`` and a ``name``
            (:class:`~vis_steer_lens.SegmentationIoUScorer`, :class:`~vis_steer_lens.LikelihoodScorer`, ...).
        column: The score column (default: the scorer's ``name``).
    """

    def select(rows: pd.DataFrame) -> float:
        scored = scorer.score(rows.assign(method="steering", direction="sae"), progress=False)
        values = scored[column or scorer.name].to_numpy(float) if len(scored) else np.array([])
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    select.name = scorer.name  # recorded in the run's coefficient choice
    return select


def sweep_figure(table: pd.DataFrame, hook_name: str = ""):
    """A plotly figure of a sweep: changed, flagged and distinct fractions and the score per multiple."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for column, label in (
        ("changed_fraction", "answers changed by steering"),
        ("degenerate_fraction", "flagged answers"),
        ("distinct_fraction", "distinct answers"),
        ("score", "score"),
    ):
        fig.add_trace(go.Scatter(x=table["multiple"], y=table[column], mode="lines+markers", name=label))
    chosen = table[table["chosen"]].iloc[0]
    fig.add_vline(x=chosen["multiple"], line_dash="dot", annotation_text=f"chosen {chosen['multiple']:g}x")
    fig.update_xaxes(type="log", title="coefficient / mean patch norm at the hook")
    fig.update_yaxes(title="fraction", range=[0, 1.05])
    fig.update_layout(title=f"Steering coefficient sweep at {hook_name}".strip(), template="plotly_white")
    return fig


__all__ = [
    "DEFAULT_MULTIPLES",
    "DEFAULT_SAMPLE_SIZE",
    "WORKING_SHARE",
    "sample_features",
    "sweep_figure",
    "sweep_table",
]
