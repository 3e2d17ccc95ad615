"""Append-only JSON-lines files that survive a process killed mid-write."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The complete rows of a JSON-lines file, cutting off a torn last line.

    A run killed while writing leaves a partial last line; it is removed from the file so that
    appending continues from the last complete row, never after garbage.
    """
    path = Path(path)
    if not path.exists():
        return []
    rows: list[dict[str, Any]] = []
    with open(path, "rb+") as f:
        data = f.read()
        good_end = 0
        while (end := data.find(b"\n", good_end)) >= 0:
            try:
                rows.append(json.loads(data[good_end:end]))
            except json.JSONDecodeError:
                break
            good_end = end + 1
        if good_end < len(data):
            f.truncate(good_end)
    return rows


def append_jsonl(path: str | Path, rows: list[dict[str, Any]], default: Any = None) -> None:
    """Append rows durably: written, flushed and synced to disk before returning."""
    if not rows:
        return
    with open(path, "a") as f:
        for row in rows:
            f.write(json.dumps(row, default=default) + "\n")
        f.flush()
        os.fsync(f.fileno())
