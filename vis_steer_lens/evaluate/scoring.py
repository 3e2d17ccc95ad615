"""What the per-explanation scorers share: the row key, resumable stores, the list of scorer names.

A per-explanation scorer (segmentation IoU, detection, likelihood) scores each explanation row on
its own, writes one row per scored explanation to ``RUN/scores/<name>.<scorer>.jsonl`` as it goes
(resumable, like the generation AUROC), and reports one number per row in a column named after
the scorer. ``compare`` puts that column beside the AUROC columns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from vis_steer_lens.evaluate.generation_auroc import (
    KEY_COLUMNS,
    _normalise_explanations,
    resume_scoring,
)
from vis_steer_lens.evaluate.metrics import method_label
from vis_steer_lens.store import ResumeMismatchError

#: Every scorer ``evaluate --scorer`` knows, in the order ``compare`` shows them.
SCORERS = (
    "generation_auroc",
    "clip",
    "segmentation_iou",
    "segmentation_iou_union",
    "detection",
    "likelihood",
    "ground_truth",
)


class ScorerSettingsMismatchError(ResumeMismatchError):
    """A scores file written by the same scorer with other settings."""


def score_rows(
    explanations: pd.DataFrame,
    score_chunk: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
    *,
    settings: dict[str, Any],
    sae_id: str = "",
    chunk_size: int = 8,
    out_path: str | Path | None = None,
    progress: bool = True,
    desc: str = "scoring",
) -> list[dict[str, Any]]:
    """Score every explanation row once, resuming from ``out_path``; rows of dead features are left out.

    Args:
        explanations: ``feature``, ``explanation`` and usually ``sae_id``, ``method``, ``direction``.
        score_chunk: ``rows -> scored rows``; each scored row keeps the row's key columns.
        settings: The scorer's settings, stored beside ``out_path`` (another setting is refused).
        sae_id: The default ``sae_id`` of rows without one.
        chunk_size: Rows per ``score_chunk`` call (and per append to the file).
        out_path: A ``.jsonl`` file, or ``None``.
        progress: Show a progress bar.
        desc: The progress bar's label.

    Returns:
        One scored row per input row, in input order, with ``method_label`` and ``is_control``.
    """
    if "flag" in explanations:
        explanations = explanations[explanations["flag"].astype(object) != "dead"]
    df = _normalise_explanations(explanations, sae_id)
    return resume_scoring(
        df,
        score_chunk,
        settings=settings,
        error=ScorerSettingsMismatchError,
        chunk_size=chunk_size,
        out_path=out_path,
        progress=progress,
        desc=desc,
        settings_in_rows=True,
    )


def rows_frame(rows: Iterable[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """Scored rows as a DataFrame: key columns, ``method_label``, ``is_control``, then ``columns``."""
    records = []
    for row in rows:
        record = {c: row.get(c) for c in KEY_COLUMNS}
        record["feature"] = int(row["feature"])
        record["method_label"] = method_label(row["method"], row["direction"])
        record["is_control"] = str(row["direction"]) != "sae"
        record["explanation"] = row.get("explanation", "")
        record.update({c: row.get(c) for c in columns})
        records.append(record)
    head = [*KEY_COLUMNS, "method_label", "is_control", "explanation"]
    return pd.DataFrame(records, columns=[*head, *columns])


__all__ = ["SCORERS", "ScorerSettingsMismatchError", "rows_frame", "score_rows"]
