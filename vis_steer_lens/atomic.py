"""Files written whole or not at all, and damaged files named when read.

Every file the library writes goes through :func:`atomic_path` (or :func:`atomic_write_text` /
:func:`atomic_write_bytes`): it is written to a temporary file in the same folder, synced, and
renamed onto its name, so a full disk or a kill leaves the previous file as it was. A failure is
one :class:`FileWriteError` naming the file and what to do. Reads of binary files go through
:func:`load_safetensors`, which names a damaged file (:class:`DamagedFileError`) instead of
showing a parser's traceback.

>>> with atomic_path("out/table.csv") as tmp:     # doctest: +SKIP
...     frame.to_csv(tmp, index=False)
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class FileWriteError(OSError):
    """A file could not be written (full disk, no permission, ...); the previous one is unchanged."""

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno 28]" in front
        return self.strerror or super().__str__()


class DamagedFileError(ValueError):
    """A file the library wrote earlier that cannot be read back (truncated, overwritten, ...)."""


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.errno is not None:
        return os.strerror(err.errno)
    text = str(err)
    # safetensors reports I/O errors as text: "... Os { code: 28, kind: StorageFull, ... }"
    if "code: 28" in text or "StorageFull" in text:
        return os.strerror(errno.ENOSPC)
    return text or type(err).__name__


def write_error(target: str | Path, err: BaseException) -> FileWriteError:
    """The one-line error for a failed write of ``target``."""
    reason = _reason(err)
    code = getattr(err, "errno", None)
    if code is None and reason == os.strerror(errno.ENOSPC):
        code = errno.ENOSPC
    hint = "free some space" if code == errno.ENOSPC else "check that the folder is writable and has space"
    return FileWriteError(
        code,
        f"Could not write {target}: {reason}. Nothing was replaced (a file there before is unchanged); "
        f"{hint} and run the command again.",
    )


@contextmanager
def atomic_path(target: str | Path, mode: int | None = None, sync: bool = True) -> Iterator[Path]:
    """A temporary path beside ``target`` to write; renamed onto ``target`` when the block ends.

    On any error inside the block (or while renaming) the temporary file is removed and
    ``target`` is left as it was; an ``OSError`` (or a library's text about one) becomes a
    :class:`FileWriteError` naming ``target``.

    Args:
        target: The file to write.
        mode: Permission bits (default: what a plain ``open`` would give under the umask).
        sync: ``fsync`` the file before renaming it (durable across a power cut). Exports of
            thousands of small files (dashboards) pass ``False``: the rename still never shows a
            half-written file to a reader, and a kill leaves the previous one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as err:
        raise write_error(target, err) from err
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if sync:
            _sync(tmp)
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)  # mkstemp makes owner-only files
        os.replace(tmp, target)
    except FileWriteError:
        tmp.unlink(missing_ok=True)
        raise
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise write_error(target, err) from err
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if _reason(err) == os.strerror(errno.ENOSPC):  # a library's own error type, about a full disk
            raise write_error(target, err) from err
        raise


@contextmanager
def atomic_folder(target: str | Path) -> Iterator[Path]:
    """A temporary folder beside ``target`` to write a folder's files into (a library's own
    ``save_model`` / ``save_pretrained``); when the block ends each file is renamed into ``target``.

    Each file is replaced whole, so a full disk or a kill while writing leaves ``target`` as it was
    (the files are written before any is moved). A failure is a :class:`FileWriteError` naming
    ``target``.
    """
    import shutil

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    except OSError as err:
        raise write_error(target, err) from err
    try:
        yield tmp
        target.mkdir(exist_ok=True)
        for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
            destination = target / path.relative_to(tmp)
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, destination)
    except FileWriteError:
        raise
    except OSError as err:
        raise write_error(target, err) from err
    except BaseException as err:
        if _reason(err) == os.strerror(errno.ENOSPC):
            raise write_error(target, err) from err
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _sync(path: Path) -> None:
    try:
        with open(path, "rb+") as f:
            os.fsync(f.fileno())
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP):  # filesystems that cannot sync
            raise


def atomic_write_bytes(target: str | Path, data: bytes, sync: bool = True) -> Path:
    """Write ``data`` to ``target`` atomically (see :func:`atomic_path`)."""
    with atomic_path(target, sync=sync) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: str | Path, text: str, encoding: str = "utf-8", sync: bool = True) -> Path:
    """Write ``text`` to ``target`` atomically (see :func:`atomic_path`)."""
    return atomic_write_bytes(target, text.encode(encoding), sync=sync)


def save_safetensors(
    tensors: dict[str, Any], target: str | Path, metadata: dict[str, str] | None = None
) -> Path:
    """``safetensors.torch.save_file`` to ``target``, atomically."""
    from safetensors.torch import save_file

    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(target)


def damaged(path: str | Path, err: BaseException, what: str, fix: str) -> DamagedFileError:
    """The one-line error for a file that cannot be read: which file, what it is, what to do."""
    detail = " ".join(str(err).split())[:200] or type(err).__name__
    return DamagedFileError(f"{path} ({what}) cannot be read, it is damaged or truncated ({detail}); {fix}.")


def load_safetensors(path: str | Path, what: str, fix: str) -> dict[str, Any]:
    """``safetensors.torch.load_file``, with a damaged file named (:class:`DamagedFileError`).

    Args:
        path: The file.
        what: What it holds, for the message (``"mined top images"``).
        fix: What to do about it (``"delete it and run mine again"``).
    """
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (OSError, FileNotFoundError):
        raise
    except Exception as err:  # safetensors' SafetensorError, a truncated header's ValueError, ...
        raise damaged(path, err, what, fix) from err


def safetensors_metadata(path: str | Path, what: str, fix: str) -> dict[str, str]:
    """The header metadata of a safetensors file, with a damaged file named."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}
    except (OSError, FileNotFoundError):
        raise
    except Exception as err:
        raise damaged(path, err, what, fix) from err


__all__ = [
    "DamagedFileError",
    "FileWriteError",
    "atomic_folder",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "damaged",
    "load_safetensors",
    "safetensors_metadata",
    "save_safetensors",
    "write_error",
]
