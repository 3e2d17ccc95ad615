"""The one resumable store that explain, evaluate and mine write through.

A store is a JSON-lines file of finished rows, keyed (by feature, or by feature and explanation),
with a run description beside it (``<file>.run.json``): the settings that define the run. Rows
are appended durably as work finishes; reopening with the same description resumes, and with
another one fails, naming every setting that differs. A torn or damaged line costs only itself
(:func:`vis_steer_lens.jsonl.read_jsonl`). One process writes a store at a time: a lock file
(``<file>.lock``, holding the writer's host and pid) refuses a second writer, and a lock left by a
process that died on this host is taken over. Mining keeps its state in safetensors but checks its
description with the same :func:`description_mismatches`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from vis_steer_lens.atomic import atomic_write_text, damaged, write_error
from vis_steer_lens.jsonl import append_jsonl, read_jsonl

logger = logging.getLogger(__name__)

#: How long an empty lock file is given to receive its writer's ``host:pid`` before it counts as stale.
_EMPTY_LOCK_WAIT = 0.5


class ResumeMismatchError(ValueError):
    """Results written by a run with other settings (another SAE, method, prompt, generator, ...)."""


class ResultsLockedError(OSError):
    """Another live process is writing the same results file."""


class WriterLock:
    """An exclusive lock file beside a results file, for the lifetime of one writer.

    ``O_CREAT | O_EXCL`` creation is atomic on local filesystems and NFSv3+, so of two processes
    opening the same store only one gets it. The file records ``host:pid``; a lock whose process is
    gone (same host) is stale and taken over, one on another host is respected.

    Args:
        path: The lock file.
        target: The file it protects (for messages).
    """

    def __init__(self, path: str | Path, target: str | Path) -> None:
        self.path = Path(path)
        self.target = Path(target)
        self.held = False

    def acquire(self) -> WriterLock:
        owner = f"{socket.gethostname()}:{os.getpid()}"
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:  # empty or unreadable: a writer between open and write, or a dead one
                    time.sleep(_EMPTY_LOCK_WAIT)
                    holder = self._holder()
                    if holder is None:  # still nothing: no live writer leaves it so (a full disk did)
                        logger.warning("Taking over %s: it is empty or unreadable (a stale lock).", self.path)
                        self.path.unlink(missing_ok=True)
                        continue
                if not self._alive(holder):
                    self.path.unlink(missing_ok=True)  # its writer died: the lock is stale
                    continue
                if holder == owner:
                    raise ResultsLockedError(
                        f"{self.target} is open for writing already in this process (a results store not "
                        "closed yet); close() it, or use one store per file."
                    ) from None
                raise ResultsLockedError(
                    f"{self.target} is being written by another process ({holder or 'unknown'}); two "
                    f"writers would duplicate its rows. Wait for it to finish, write to another path, or "
                    f"delete {self.path.name} if no such process is running."
                ) from None
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(owner)
                    f.flush()
            except OSError as err:  # a full disk: leave no empty lock behind to refuse later runs
                self.path.unlink(missing_ok=True)
                raise write_error(self.path, err) from err
            self.held = True
            return self
        raise ResultsLockedError(f"Could not take the lock {self.path} for {self.target}; try again.")

    def release(self) -> None:
        if self.held:
            self.held = False
            self.path.unlink(missing_ok=True)

    def _holder(self) -> str | None:
        try:
            return self.path.read_text().strip() or None
        except (OSError, UnicodeDecodeError):
            return None

    @staticmethod
    def _alive(holder: str) -> bool:
        host, _, pid = holder.rpartition(":")
        if host != socket.gethostname() or not pid.isdigit():
            return True  # cannot tell for another machine: assume it is working
        if int(pid) == os.getpid():
            return True  # this process holds it already (another store object over the same file)
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def __del__(self) -> None:
        self.release()


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
        read_only: Only read the finished rows: no lock, no description written, the file left
            as it is (for a reader beside a writer, or a merge that reads shards).

    A writing store holds ``<file>.lock`` until :meth:`close` (or the end of a ``with`` block).

    Raises:
        ResumeMismatchError: If the file was written with another description (or has none).
        FileExistsError: If the file exists and ``resume`` is false.
        ResultsLockedError: If another live process is writing the file.
    """

    def __init__(
        self,
        path: str | Path,
        description: dict[str, Any],
        key: str | tuple[str, ...] | Callable[[dict[str, Any]], Hashable] = "feature",
        resume: bool = True,
        error: type[ResumeMismatchError] = ResumeMismatchError,
        read_only: bool = False,
    ):
        self.path = Path(path)
        if self.path.suffix != ".jsonl":
            raise ValueError(f"Results are appended to a .jsonl file; got {str(self.path)!r}.")
        self.description_path = self.path.with_name(self.path.name + ".run.json")
        self.description = _plain(description)
        self._key = _key_function(key)
        self._error = error
        self.rows: dict[Hashable, dict[str, Any]] = {}
        self.read_only = read_only
        self._lock = WriterLock(self.path.with_name(self.path.name + ".lock"), self.path)
        if read_only:
            if self.path.exists() or self.description_path.exists():
                self._check_description()
                self._add_rows(read_jsonl(self.path, repair=False))
            return
        if self.path.parent.exists() and not self.path.parent.is_dir():
            raise NotADirectoryError(f"{str(self.path.parent)!r} is a file; results go into a folder.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            self._open(resume)
        except BaseException:
            self._lock.release()
            raise

    def _open(self, resume: bool) -> None:
        if not (self.path.exists() and self.path.stat().st_size > 0):
            # A run that stopped before its first row (a bad setting, a crash while loading) leaves
            # at most a description: nothing to keep, so this run's settings replace it.
            self.path.unlink(missing_ok=True)
            self.description_path.unlink(missing_ok=True)
        if self.path.exists() or self.description_path.exists():
            if not resume:
                raise FileExistsError(
                    f"{self.path} holds results already; pass resume=True to continue it, or another path."
                )
            self._check_description()
            self._add_rows(read_jsonl(self.path))
        else:
            atomic_write_text(self.description_path, json.dumps(self.description, indent=2, sort_keys=True))

    def _check_description(self) -> None:
        if not self.description_path.exists():
            raise self._error(
                f"{self.path} has results but no run description ({self.description_path.name}), so whether "
                "they belong to this run is unknown; move the file away or choose another path."
            )
        try:
            stored = json.loads(self.description_path.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise damaged(
                self.description_path,
                err,
                f"the run description of {self.path.name}",
                "restore it, or move the results away and run the command again",
            ) from err
        differing = description_mismatches(stored, self.description)
        if differing:
            raise self._error(
                f"Refusing to resume {self.path}: it was written with other settings ({'; '.join(differing)}). "
                "Use another output path, or the original settings."
            )

    def _add_rows(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.rows[self._key(row)] = row

    def close(self) -> None:
        """Release the writer's lock (the rows stay readable through :attr:`rows`)."""
        self._lock.release()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def key(self, row: dict[str, Any]) -> Hashable:
        """The key of a row."""
        return self._key(row)

    @property
    def done(self) -> set[Hashable]:
        """Keys of the finished rows."""
        return set(self.rows)

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Write finished rows durably (flush + fsync) before returning."""
        if self.read_only:
            raise ValueError(f"{self.path} was opened read-only; open it with read_only=False to write.")
        if not self._lock.held:
            raise ValueError(f"{self.path} was closed; open it again to write more rows.")
        append_jsonl(self.path, rows, default=json_default)
        for row in rows:
            self.rows[self._key(row)] = _plain(row)

    def frame(self, keys: list[Hashable] | None = None) -> pd.DataFrame:
        """Rows as a DataFrame, in the order of ``keys`` (all rows if ``None``)."""
        order = list(self.rows) if keys is None else [k for k in keys if k in self.rows]
        return pd.DataFrame([self.rows[k] for k in order])


def shard_path(path: str | Path, rank: int) -> Path:
    """Where rank ``rank`` of a launched run writes its rows of the results file ``path``."""
    path = Path(path)
    return path.with_name(path.name + ".shards") / f"rank-{int(rank):05d}.jsonl"


def merge_shards(store: ResultsStore) -> int:
    """Fold every rank's shard file into ``store`` (the rows it lacks), then delete the shards.

    Safe to repeat after a crash at any point: rows are appended (synced) before their shard goes,
    and rows the store has already are never added twice. A shard whose writer is still alive is
    refused (:class:`ResultsLockedError`).

    Returns:
        The number of rows added.
    """
    folder = store.path.with_name(store.path.name + ".shards")
    if not folder.is_dir():
        return 0
    added = 0
    for part_path in sorted(folder.glob("rank-*.jsonl")):
        lock = WriterLock(part_path.with_name(part_path.name + ".lock"), part_path).acquire()
        try:
            part = ResultsStore(
                part_path, store.description, key=store._key, error=store._error, read_only=True
            )
            new = [row for key, row in part.rows.items() if key not in store.rows]
            store.append(new)
            added += len(new)
            part_path.unlink(missing_ok=True)
            part.description_path.unlink(missing_ok=True)
        finally:
            lock.release()
    if not any(folder.iterdir()):
        folder.rmdir()
    return added


def _key_function(key: str | tuple[str, ...] | Callable) -> Callable[[dict[str, Any]], Hashable]:
    if callable(key):
        return key
    if isinstance(key, str):
        return lambda row: int(row[key]) if key == "feature" else row[key]
    return lambda row: tuple(int(row[c]) if c == "feature" else str(row[c]) for c in key)


__all__ = [
    "ResultsLockedError",
    "ResultsStore",
    "ResumeMismatchError",
    "WriterLock",
    "description_mismatches",
    "json_default",
    "merge_shards",
    "shard_path",
]
