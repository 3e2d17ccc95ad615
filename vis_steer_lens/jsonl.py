"""Append-only JSON-lines files that survive a process killed mid-write."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from vis_steer_lens.atomic import FileWriteError, atomic_write_bytes, atomic_write_text

logger = logging.getLogger(__name__)


def read_jsonl(path: str | Path, repair: bool = True) -> list[dict[str, Any]]:
    """Every complete row of a JSON-lines file; damaged lines are kept out, never the rows after them.

    A run killed while writing leaves a partial last line. A damaged line elsewhere (a disk or an
    editor's doing) costs only itself: every good row before and after it is read. With
    ``repair`` the file is made clean so that appending continues after good rows: damaged lines
    are moved to a side file ``<name>.damaged`` (kept, for a look) and a warning says how many.
    Readers that only look (a dashboard over a run still being written) pass ``repair=False``.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    rows: list[dict[str, Any]] = []
    good: list[bytes] = []
    damaged: list[bytes] = []
    lines = data.split(b"\n")
    torn = lines.pop() if lines else b""  # after the last newline: empty, or a torn last line
    for line in lines:
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
            good.append(line)
        except json.JSONDecodeError:
            damaged.append(line)
    if repair and (damaged or torn):
        if damaged:
            with open(path.with_name(path.name + ".damaged"), "ab") as side:
                side.write(b"".join(line + b"\n" for line in damaged))
            logger.warning(
                "%s: %d damaged line(s) set aside in %s; the %d good rows are kept.",
                path,
                len(damaged),
                path.name + ".damaged",
                len(rows),
            )
        atomic_write_bytes(path, b"".join(line + b"\n" for line in good))
    return rows


def append_jsonl(path: str | Path, rows: list[dict[str, Any]], default: Any = None) -> None:
    """Append rows durably: written, flushed and synced to disk before returning."""
    if not rows:
        return
    try:
        with open(path, "a") as f:
            for row in rows:
                f.write(json.dumps(row, default=default) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:  # a full disk: the rows before stay; a torn last line is set aside on reading
        raise FileWriteError(
            err.errno,
            f"Could not append to {path}: {err.strerror or err}. The rows written before are kept; free "
            "some space and run the command again to resume.",
        ) from err


def write_jsonl(path: str | Path, rows: list[dict[str, Any]], default: Any = None) -> None:
    """Replace a file's rows atomically (a temporary file, synced, then renamed over it)."""
    text = "".join(json.dumps(row, default=default) + "\n" for row in rows)
    atomic_write_text(path, text)
