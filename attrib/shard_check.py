"""Is a shard file whole, and does it hold the rows its name promises? Checks made on every open.

Why: HDF5 reports a truncated or zero-byte file as an OSError from deep inside h5py, and a shard file
copied over another opens fine and hands back the wrong rows, so a probe's accuracy drops with nothing
saying why. A shard is published complete (see :mod:`attrib.atomic`), so any such file was damaged
afterwards: by a full disk, an interrupted copy, a hand-made fix. These checks are cheap enough to run
whenever a shard is opened: :func:`file_damage` reads the first bytes of the file and no HDF5 at all
(`attrib cache ls` uses it), :func:`content_problem` reads two elements of the ``row`` dataset and one
attribute, never the features. The checksum over every array stays with ``attrib cache verify``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from attrib import atomic

if TYPE_CHECKING:  # the caller opens the file; nothing to import at run time
    import h5py

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
IDENTITY_ATTR = "identity"  # the manifest's identity hash, written into every shard since this check exists
_HEADER_BYTES = 128  # a superblock's fixed part with its addresses (8-byte offsets: 52 bytes for version 1)


def _superblock_eof(head: bytes) -> int | None:
    """End-of-file address a superblock records (an absolute offset), or None when it cannot be told.

    Layouts from the HDF5 file-format spec: versions 0/1 hold size-of-offsets at byte 13 and the base,
    free-space, end-of-file addresses from byte 24 (28 for version 1); versions 2/3 hold it at byte 9 and
    base, extension, end-of-file from byte 12.
    """
    version = head[8]
    if version in (0, 1):
        size, at = head[13], 24 if version == 0 else 28
    elif version in (2, 3):
        size, at = head[9], 12
    else:
        return None  # a newer format: leave the verdict to HDF5
    at += 2 * size
    if size not in (2, 4, 8) or len(head) < at + size:
        return None
    eof = int.from_bytes(head[at:at + size], "little")
    return None if eof == (1 << (8 * size)) - 1 else eof  # all ones: "undefined address"


def file_damage(path: str | os.PathLike) -> str:
    """'' when ``path`` looks like a whole HDF5 file; otherwise what is wrong with it, in a few words.

    Whole means: not empty, an HDF5 signature where the format puts one (byte 0, 512, 1024, ...), and at
    least as many bytes as the end-of-file address its superblock records (a truncated copy has fewer).
    ``'missing'`` when there is no file.
    """
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"cannot stat it: {exc.strerror or exc}"
    if size == 0:
        return "zero bytes"
    try:
        with open(path, "rb") as f:
            offset = 0
            while offset + len(HDF5_SIGNATURE) <= size:
                f.seek(offset)
                head = f.read(_HEADER_BYTES)
                if head.startswith(HDF5_SIGNATURE):
                    break
                offset = 512 if offset == 0 else 2 * offset
            else:
                return f"not an HDF5 file ({size} bytes, no HDF5 signature)"
    except OSError as exc:
        return f"cannot read it: {exc.strerror or exc}"
    if len(head) < _HEADER_BYTES:  # even an empty HDF5 file is several hundred bytes long
        return f"truncated: {size} bytes, cut inside the HDF5 superblock"
    eof = _superblock_eof(head)
    if eof is not None and size < eof:
        return f"truncated: {size} bytes, its HDF5 superblock says {eof}"
    return ""


def content_problem(f: "h5py.File", start: int, stop: int, identity: str | None) -> str:
    """'' when the open shard ``f`` holds rows [start, stop) of the feature set with this identity hash.

    Reads the ``row`` dataset's shape and its first and last element, and the identity attribute (shards
    written before it existed have none and pass on their rows alone).
    """
    if "row" not in f:
        return "no dataset 'row'"
    row = f["row"]
    n = stop - start
    if row.shape != (n,):
        return f"holds {row.shape[0] if row.ndim == 1 else row.shape} rows, expected {n} (rows {start}..{stop - 1})"
    if n:
        first, last = int(row[0]), int(row[n - 1])
        if (first, last) != (start, stop - 1):
            return (f"holds rows {first}..{last}, expected {start}..{stop - 1} (a copy of another shard's "
                    "file?)")
    own = f.attrs.get(IDENTITY_ATTR)
    if identity and own is not None:
        own = own.decode() if isinstance(own, bytes) else str(own)
        if own != identity:
            return f"belongs to another feature set (identity {own}, this one is {identity})"
    return ""


def remove_if_damaged(path: Path, damage: Callable[[Path], str]) -> str:
    """Remove the shard at ``path`` if ``damage(file)`` names a problem; returns the problem ('' if kept).

    The file is first moved aside (one atomic rename) and checked where it now lies, so a whole shard
    that another process published meanwhile is never deleted on the strength of an older look: a file
    that turns out whole is put back (unless yet another copy was published meanwhile). The aside name
    is a temporary file of this process, so a kill in between leaves a leftover that the next run of
    this host removes.
    """
    aside = atomic.temp_path(path)
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return ""
    try:
        why = damage(aside)
        if not why:
            atomic.publish(aside, path, atomic.KEEP)
        return why
    finally:
        aside.unlink(missing_ok=True)
