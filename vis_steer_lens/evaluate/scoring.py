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
from tqdm.auto import tqdm

from vis_steer_lens.evaluate.generation_auroc import (
    KEY_COLUMNS,
    _key,
    _normalise_explanations,
)
from vis_steer_lens.evaluate.metrics import method_label
from vis_steer_lens.store import ResultsStore, ResumeMismatchError

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
    store = None
    if out_path is not None:
        store = ResultsStore(out_path, settings, key=KEY_COLUMNS, error=ScorerSettingsMismatchError)
    done: dict[tuple, dict[str, Any]] = dict(store.rows) if store is not None else {}
    todo: dict[tuple, dict[str, Any]] = {}
    for row in df.to_dict("records"):
        key = _key(row)
        if key not in done and key not in todo:
            todo[key] = row
    pending = list(todo.values())
    bar = tqdm(total=len(pending), desc=desc, disable=not progress)
    try:
        for start in range(0, len(pending), max(1, chunk_size)):
            chunk = score_chunk(pending[start : start + chunk_size])
            chunk = [{**r, **settings} for r in chunk]
            if store is not None:
                store.append(chunk)
            done.update({_key(r): r for r in chunk})
            bar.update(len(chunk))
    finally:
        bar.close()
        if store is not None:
            store.close()
    out = []
    for row in df.to_dict("records"):
        scored = dict(done[_key(row)])
        scored.update({c: row[c] for c in ("sae_id", "method", "direction", "explanation")})
        out.append(scored)
    return out


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
