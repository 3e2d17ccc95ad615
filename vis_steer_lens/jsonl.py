"""Append-only JSON-lines files that survive a process killed mid-write."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def read_jsonl(path: str | Path, repair: bool = True) -> list[dict[str, Any]]:
    """The complete rows of a JSON-lines file, cutting off a torn last line.

    A run killed while writing leaves a partial last line; with ``repair`` it is removed from the
    file so that appending continues from the last complete row, never after garbage. Readers
    that only look (a dashboard over a run still being written) pass ``repair=False``.
    """
    path = Path(path)
    if not path.exists():
        return []
    rows: list[dict[str, Any]] = []
    with open(path, "rb+" if repair else "rb") as f:
        data = f.read()
        good_end = 0
        while (end := data.find(b"\n", good_end)) >= 0:
            try:
                rows.append(json.loads(data[good_end:end]))
            except json.JSONDecodeError:
                break
            good_end = end + 1
        if repair and good_end < len(data):
            f.truncate(good_end)
    return rows


def write_jsonl(path: str | Path, rows: list[dict[str, Any]], default: Any = None) -> None:
    """Replace a file's rows atomically (a temporary file, synced, then renamed over it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row, default=default) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def append_jsonl(path: str | Path, rows: list[dict[str, Any]], default: Any = None) -> None:
    """Append rows durably: written, flushed and synced to disk before returning."""
    if not rows:
        return
    with open(path, "a") as f:
        for row in rows:
            f.write(json.dumps(row, default=default) + "\n")
        f.flush()
        os.fsync(f.fileno())
