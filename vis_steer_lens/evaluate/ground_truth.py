"""Ground truth: each feature's known concept, and whether explanations name it.

Only a world where concepts are known (the toy world) has ground truth; a plug-in provides it as a
:class:`GroundTruth` (registered in :data:`vis_steer_lens.plugins.GROUND_TRUTHS`, so that a run
folder can reopen it). The core scores against it without knowing the world.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from vis_steer_lens.evaluate.metrics import bootstrap_mean_ci, method_label
from vis_steer_lens.plugins import GROUND_TRUTHS


@dataclass
class GroundTruth:
    """Each feature's known concept, from a plug-in that knows its world.

    Attributes:
        name: The plug-in's registry name (``"toy"``), recorded in run folders.
        table: One row per feature: ``feature``, ``concept`` (the target an explanation should
            name, or ``None``), ``clear`` (the feature detects it reliably) and any columns of the
            plug-in's own (shown on dashboards).
        is_correct: ``(explanation, concept) -> bool``: whether an explanation names a concept.
    """

    name: str
    table: pd.DataFrame
    is_correct: Callable[[str, str], bool]

    def clear_concepts(self) -> pd.Series:
        """``feature -> concept`` of the features with a clear concept."""
        clear = self.table[self.table["clear"].astype(bool)]
        return pd.Series(clear["concept"].tolist(), index=clear["feature"].astype(int).tolist(), dtype=object)

    def explanations(self, features: list[int] | None = None) -> pd.DataFrame:
        """Each feature's concept word, as if it were an explanation (method ``"ground truth"``).

        Scored with the same generator and reference images as the methods, these show what a
        correct one-concept explanation reaches under that scorer: the ceiling that methods'
        AUROCs are read against.

        Args:
            features: Features to include (default: every feature with a concept).

        Returns:
            ``feature, explanation, method, direction`` (direction ``"sae"``).
        """
        table = self.table.set_index(self.table["feature"].astype(int))
        wanted = table.index if features is None else [int(f) for f in features if int(f) in table.index]
        rows = [
            (int(f), table.at[f, "concept"], GROUND_TRUTH_METHOD, "sae")
            for f in wanted
            if isinstance(table.at[f, "concept"], str)
        ]
        return pd.DataFrame(rows, columns=["feature", "explanation", "method", "direction"])


def load_ground_truth(name: str, table: pd.DataFrame) -> GroundTruth:
    """Reopen a plug-in's ground truth from its table (as a run folder stores it)."""
    return GROUND_TRUTHS.get(name)(table)


#: Method name of the reference explanations that name each feature's ground-truth concept.
GROUND_TRUTH_METHOD = "ground truth"


def ground_truth_accuracy(
    explanations: pd.DataFrame, ground_truth: GroundTruth, seed: int = 0
) -> pd.DataFrame:
    """Share of clear features whose explanation names their concept, per method label.

    Args:
        explanations: Columns ``feature``, ``explanation``, ``method`` and optionally ``direction``.
        ground_truth: The world's :class:`GroundTruth`.
        seed: Seed of the bootstrap CI.

    Returns:
        One row per method label: ``method_label, n_clear, n_correct, accuracy, accuracy_lo,
        accuracy_hi``. Only features with a clear concept count (and, for a permuted control, the
        feature's own concept is the target: it was explained with another feature's direction).
    """
    clear = ground_truth.clear_concepts()
    df = explanations.copy()
    if "direction" not in df.columns:
        df["direction"] = "sae"
    if "method" not in df.columns:
        df["method"] = "unknown"
    df["method_label"] = [method_label(m, d) for m, d in zip(df["method"], df["direction"], strict=True)]
    df = df[df["feature"].astype(int).isin(clear.index)]
    rows = []
    for label, group in df.groupby("method_label", sort=False):
        correct = [
            isinstance(text, str) and ground_truth.is_correct(text, clear[int(feature)])
            for feature, text in zip(group["feature"], group["explanation"], strict=True)
        ]
        mean, lo, hi = bootstrap_mean_ci(np.asarray(correct, dtype=float), seed=seed)
        rows.append(
            {
                "method_label": label,
                "n_clear": len(correct),
                "n_correct": int(sum(correct)),
                "accuracy": mean,
                "accuracy_lo": lo,
                "accuracy_hi": hi,
            }
        )
    return pd.DataFrame(
        rows, columns=["method_label", "n_clear", "n_correct", "accuracy", "accuracy_lo", "accuracy_hi"]
    )


__all__ = ["GROUND_TRUTH_METHOD", "GroundTruth", "ground_truth_accuracy", "load_ground_truth"]
