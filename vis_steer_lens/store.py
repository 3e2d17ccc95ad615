"""The one resumable store that explain, evaluate and mine write through.

A store is a JSON-lines file of finished rows, keyed (by feature, or by feature and explanation),
with a run description beside it (``<file>.run.json``): the settings that define the run. Rows
are appended durably as work finishes; reopening with the same description resumes, and with
another one fails, naming every setting that differs. A torn or damaged line costs only itself
(:func:`vis_steer_lens.jsonl.read_jsonl`). Mining keeps its state in safetensors but checks its
description with the same :func:`description_mismatches`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from vis_steer_lens.jsonl import append_jsonl, read_jsonl


class ResumeMismatchError(ValueError):
    """Results written by a run with other settings (another SAE, method, prompt, generator, ...)."""


def json_default(value: Any) -> Any:
    """``json.dumps`` fallback for numpy and torch scalars and arrays."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=json_default))


def description_mismatches(
    stored: dict[str, Any], current: dict[str, Any], keys: Iterable[str] | None = None
) -> list[str]:
    """The settings on which two run descriptions differ, as ``"key: stored X, now Y"`` lines.

    Args:
        stored: The description found with the results.
        current: This run's description.
        keys: The settings that count (default: every key of either).
    """
    stored, current = _plain(stored), _plain(current)
    names = sorted(set(stored) | set(current)) if keys is None else list(keys)
    return [
        f"{key}: stored {stored.get(key)!r}, now {current.get(key)!r}"
        for key in names
        if stored.get(key) != current.get(key)
    ]


class ResultsStore:
    """Finished rows of one run, appended as they finish and resumed without loss or duplicates.

    Args:
        path: The ``.jsonl`` file.
        description: JSON-able settings that define the run; stored beside the file.
        key: The row key: a column name, a tuple of column names, or a function of the row.
        resume: Keep finished rows of an earlier run with the same description. With
            ``resume=False`` an existing file is an error, never silently overwritten.
        error: The error type raised on a mismatch (a :class:`ResumeMismatchError` subclass).

    Raises:
        ResumeMismatchError: If the file was written with another description (or has none).
        FileExistsError: If the file exists and ``resume`` is false.
    """

    def __init__(
        self,
        path: str | Path,
        description: dict[str, Any],
        key: str | tuple[str, ...] | Callable[[dict[str, Any]], Hashable] = "feature",
        resume: bool = True,
        error: type[ResumeMismatchError] = ResumeMismatchError,
    ):
        self.path = Path(path)
        if self.path.suffix != ".jsonl":
            raise ValueError(f"Results are appended to a .jsonl file; got {str(self.path)!r}.")
        self.description_path = self.path.with_name(self.path.name + ".run.json")
        self.description = _plain(description)
        self._key = _key_function(key)
        self._error = error
        self.rows: dict[Hashable, dict[str, Any]] = {}
        if self.path.parent.exists() and not self.path.parent.is_dir():
            raise NotADirectoryError(f"{str(self.path.parent)!r} is a file; results go into a folder.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.description_path.exists():
            if not resume:
                raise FileExistsError(
                    f"{self.path} holds results already; pass resume=True to continue it, or another path."
                )
            self._check_description()
            for row in read_jsonl(self.path):
                self.rows[self._key(row)] = row
        else:
            tmp = self.description_path.with_name(self.description_path.name + ".tmp")
            tmp.write_text(json.dumps(self.description, indent=2, sort_keys=True))
            os.replace(tmp, self.description_path)

    def _check_description(self) -> None:
        if not self.description_path.exists():
            raise self._error(
                f"{self.path} has results but no run description ({self.description_path.name}), so whether "
                "they belong to this run is unknown; move the file away or choose another path."
            )
        differing = description_mismatches(json.loads(self.description_path.read_text()), self.description)
        if differing:
            raise self._error(
                f"Refusing to resume {self.path}: it was written with other settings ({'; '.join(differing)}). "
                "Use another output path, or the original settings."
            )

    def key(self, row: dict[str, Any]) -> Hashable:
        """The key of a row."""
        return self._key(row)

    @property
    def done(self) -> set[Hashable]:
        """Keys of the finished rows."""
        return set(self.rows)

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Write finished rows durably (flush + fsync) before returning."""
        append_jsonl(self.path, rows, default=json_default)
        for row in rows:
            self.rows[self._key(row)] = _plain(row)

    def frame(self, keys: list[Hashable] | None = None) -> pd.DataFrame:
        """Rows as a DataFrame, in the order of ``keys`` (all rows if ``None``)."""
        order = list(self.rows) if keys is None else [k for k in keys if k in self.rows]
        return pd.DataFrame([self.rows[k] for k in order])


def _key_function(key: str | tuple[str, ...] | Callable) -> Callable[[dict[str, Any]], Hashable]:
    if callable(key):
        return key
    if isinstance(key, str):
        return lambda row: int(row[key]) if key == "feature" else row[key]
    return lambda row: tuple(int(row[c]) if c == "feature" else str(row[c]) for c in key)


__all__ = ["ResultsStore", "ResumeMismatchError", "description_mismatches", "json_default"]
