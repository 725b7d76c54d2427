"""Atomic file writes: a reader sees the old file or the complete new one, never a part of it.

Why one module: the cache (manifest, image list, shards), saved heads and prediction files all must
survive a kill at any point, and a cache folder may be written by many processes on many hosts at once.
Every writer here writes a hidden temporary sibling ``.NAME.tmp-HOST-PID-RANDOM``, fsyncs it and
publishes it under its final name in one step. The name says which host and process wrote it, so a later
run can remove the leftovers of killed writers (:func:`remove_stale`) and leave live writers' files alone.

Three ways to publish, chosen by what an existing file at the final name means:

``REPLACE``
    the new file replaces it (a re-saved head, a predictions file written again).
``KEEP``
    it is kept and this write is dropped (the first complete shard wins; concurrent writers of one
    shard write the same rows). Publishing is a hard link, which never replaces a file. On a file
    system without hard links it falls back to ``os.replace``: the last writer wins, harmless when all
    write equal data.
``EXCLUSIVE``
    it is kept, even without hard links (the manifest: the first creator of a feature set decides, and
    the others are compared against it). The fallback is an exclusive create plus a copy, so a
    concurrent reader may briefly see a short file, which it reports as unreadable.
"""

from __future__ import annotations

import os
import socket
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

REPLACE = "replace"
KEEP = "keep"
EXCLUSIVE = "exclusive"
MODES = (REPLACE, KEEP, EXCLUSIVE)
_MARK = ".tmp-"
TEMP_GLOB = f".*{_MARK}*"


def temp_path(path: str | os.PathLike) -> Path:
    """A fresh hidden temporary sibling of ``path``, named by host and pid so stale ones can be told apart."""
    path = Path(path)
    return path.with_name(f".{path.name}{_MARK}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def temp_owner(name: str) -> tuple[str, int] | None:
    """(host, pid) of the writer of the temporary file called ``name``; None for any other name."""
    if not name.startswith(".") or _MARK not in name:
        return None
    parts = name.split(_MARK, 1)[1].split("-")
    if len(parts) < 3 or not parts[-2].isdigit():
        return None
    return "-".join(parts[:-2]), int(parts[-2])


def temp_files(folder: str | os.PathLike) -> list[Path]:
    """Temporary files of writers in ``folder``, live or killed, sorted by name."""
    return sorted(p for p in Path(folder).glob(TEMP_GLOB) if temp_owner(p.name) is not None)


def remove_stale(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files in ``folder`` left by killed processes of this host; returns them.

    Another host's files, and those of a live process (or one this user may not signal), are left alone.
    """
    removed = []
    for tmp in temp_files(folder):
        owner = temp_owner(tmp.name)
        if owner is not None and owner_dead(*owner):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def owner_dead(host: str, pid: int) -> bool:
    """Whether process ``pid`` of ``host`` is known to be gone: only a process of this host can be asked;
    a live one, or one this user may not signal, counts as alive."""
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, ValueError):
        pass
    return False


@contextmanager
def temporary(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path for ``path`` that is removed on exit, published or not (for files written by
    libraries that open their own files, such as h5py); publish it with :func:`publish` inside."""
    tmp = temp_path(path)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def publish(tmp: str | os.PathLike, path: str | os.PathLike, mode: str = REPLACE) -> bool:
    """Fsync the complete file ``tmp`` and publish it as ``path``; True unless an existing ``path`` was kept.

    ``mode`` is :data:`REPLACE`, :data:`KEEP` or :data:`EXCLUSIVE` (see the module docstring). The caller
    removes ``tmp`` afterwards (:func:`temporary` does).
    """
    if mode not in MODES:
        raise ValueError(f"publish mode {mode!r}: use one of {', '.join(MODES)}")
    tmp, path = Path(tmp), Path(path)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    if mode == REPLACE:
        os.replace(tmp, path)
    else:
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # no hard links on this file system
            if mode == KEEP:
                os.replace(tmp, path)
            elif not _copy_exclusive(tmp, path):
                return False
    _fsync_dir(path.parent)
    return True


def write_bytes(path: str | os.PathLike, data: bytes, mode: str = REPLACE) -> bool:
    """Write ``data`` to ``path`` atomically; True unless an existing ``path`` was kept (see :func:`publish`)."""
    with temporary(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
        return publish(tmp, path, mode)


def write_text(path: str | os.PathLike, text: str, mode: str = REPLACE, encoding: str = "utf-8") -> bool:
    """:func:`write_bytes` for text."""
    return write_bytes(path, text.encode(encoding), mode)


@contextmanager
def replacing(path: str | os.PathLike, *, encoding: str = "utf-8", newline: str | None = None) -> Iterator[IO[str]]:
    """A text file to write ``path`` in pieces; it replaces ``path`` only if the block ends without error.

    For outputs too large to build in memory first (a predictions file of a million rows).
    """
    with temporary(path) as tmp:
        with open(tmp, "w", encoding=encoding, newline=newline) as f:
            yield f
        publish(tmp, path, REPLACE)


def _copy_exclusive(tmp: Path, path: Path) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(tmp.read_bytes())
        f.flush()
        os.fsync(f.fileno())
    return True


def _fsync_dir(path: Path) -> None:
    """Make the new name durable too (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
