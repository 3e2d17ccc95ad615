"""Explainers' result files: the one resumable store (:mod:`vis_steer_lens.store`), keyed by feature.

Rows go to a JSON-lines file, one line per finished feature, flushed and synced as each batch
ends. A run description sits beside it (``<name>.run.json``); resuming with different settings
fails with the settings that differ, and a damaged or half-written line costs only itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from vis_steer_lens.store import ResultsStore, ResumeMismatchError


class ResultsFile(ResultsStore):
    """One explainer run's rows, keyed by feature (:class:`~vis_steer_lens.store.ResultsStore`).

    Args:
        path: The ``.jsonl`` file.
        run_config: JSON-able settings that define the run; stored beside the file.
        resume: Keep finished rows of an earlier run with the same settings. With
            ``resume=False`` an existing file is an error, never silently overwritten.
        read_only: Only read the rows (no writer's lock); see :class:`~vis_steer_lens.store.ResultsStore`.
    """

    def __init__(
        self, path: str | Path, run_config: dict[str, Any], resume: bool = True, read_only: bool = False
    ):
        super().__init__(path, run_config, key="feature", resume=resume, read_only=read_only)
        self.run_config = self.description


def read_results(path: str | Path) -> pd.DataFrame:
    """Read explanations written by any explainer (``.jsonl``, ``.parquet`` or ``.csv``)."""
    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    if path.suffix == ".jsonl":  # a torn or damaged line costs only itself, as everywhere else
        from vis_steer_lens.jsonl import read_jsonl

        return pd.DataFrame(read_jsonl(path, repair=False))
    raise ValueError(f"Unknown results format {path.suffix!r}; expected .jsonl, .parquet or .csv.")


__all__ = ["ResultsFile", "ResumeMismatchError", "read_results"]
