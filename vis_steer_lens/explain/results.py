"""Append-only result files that survive crashes and refuse to mix runs.

Rows go to a JSON-lines file, one line per finished feature, flushed and synced as each batch
ends. A run description sits beside it (``<name>.run.json``); resuming with different settings
fails with the settings that differ. On reopening, a half-written last line (the process died
mid-write) is cut off, so a resumed run never loses a finished row nor writes one twice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from vis_steer_lens.jsonl import append_jsonl, read_jsonl


class ResumeMismatchError(ValueError):
    """A results file written by a run with other settings (another SAE, method, prompt, ...)."""


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


class ResultsFile:
    """One run's rows, keyed by feature id.

    Args:
        path: The ``.jsonl`` file.
        run_config: JSON-able settings that define the run; stored beside the file.
        resume: Keep finished rows of an earlier run with the same settings. With
            ``resume=False`` an existing file is an error, never silently overwritten.
    """

    def __init__(self, path: str | Path, run_config: dict[str, Any], resume: bool = True):
        self.path = Path(path)
        self.config_path = self.path.with_name(self.path.name + ".run.json")
        self.run_config = json.loads(json.dumps(run_config, default=_json_default))
        self.rows: dict[int, dict[str, Any]] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.config_path.exists():
            if not resume:
                raise FileExistsError(
                    f"{self.path} exists; pass resume=True to continue it or choose another path."
                )
            self._check_config()
            self._load_rows()
        else:
            tmp = self.config_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.run_config, indent=2, sort_keys=True))
            os.replace(tmp, self.config_path)

    def _check_config(self) -> None:
        if not self.config_path.exists():
            raise ResumeMismatchError(
                f"{self.path} has no run description {self.config_path.name}; cannot resume it."
            )
        stored = json.loads(self.config_path.read_text())
        keys = sorted(set(stored) | set(self.run_config))
        differing = [k for k in keys if stored.get(k) != self.run_config.get(k)]
        if differing:
            details = "; ".join(
                f"{k}: file has {stored.get(k)!r}, this run {self.run_config.get(k)!r}" for k in differing
            )
            raise ResumeMismatchError(
                f"Refusing to resume {self.path}: it was written with other settings ({details}). "
                "Use another output path, or the original settings."
            )

    def _load_rows(self) -> None:
        for row in read_jsonl(self.path):
            self.rows[int(row["feature"])] = row

    @property
    def done(self) -> set[int]:
        """Features with a finished row."""
        return set(self.rows)

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Write finished rows durably (flush + fsync) before returning."""
        append_jsonl(self.path, rows, default=_json_default)
        for row in rows:
            self.rows[int(row["feature"])] = json.loads(json.dumps(row, default=_json_default))

    def frame(self, features: list[int] | None = None) -> pd.DataFrame:
        """Rows as a DataFrame, in the order of ``features`` (all rows if ``None``)."""
        order = list(self.rows) if features is None else [f for f in features if f in self.rows]
        return pd.DataFrame([self.rows[f] for f in order])


def read_results(path: str | Path) -> pd.DataFrame:
    """Read explanations written by any explainer (``.jsonl``, ``.parquet`` or ``.csv``)."""
    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    if path.suffix == ".jsonl":
        return pd.read_json(path, lines=True)
    raise ValueError(f"Unknown results format {path.suffix!r}; expected .jsonl, .parquet or .csv.")
