"""Writing one shard of a feature set: the layout every fast read relies on, and its checksum.

Why apart from :mod:`attrib.store`: the layout is decided once, here. ``cls`` is chunked (rows, 1, D)
and written block by block, flushed after each, so that one block's chunks lie next to each other on
disk and :mod:`attrib.shard_read` reads a block as one byte range per shard. The file is written under a
temporary name and published by hard link (:mod:`attrib.atomic`), so a shard that exists is whole and
the first complete copy wins; the sha256 of its arrays lets ``verify`` see corruption HDF5 cannot.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from attrib import atomic, shard_check
from attrib.manifest import DTYPE
from attrib.store_errors import StoreError

if TYPE_CHECKING:
    from attrib.store import FeatureSet

CHUNK_BYTES = 1 << 20  # ~1 MiB chunks: large enough for sequential reads, small enough for row subsets


def chunk_rows(n: int, width: int) -> int:
    return max(1, min(n, CHUNK_BYTES // (2 * width)))


def shard_checksum(row: np.ndarray, cls: np.ndarray, embed: np.ndarray, ok: np.ndarray,
                   error: Sequence[str]) -> str:
    """sha256 over a shard's arrays as stored (int64 rows, fp16 features, bool flags, utf-8 errors)."""
    h = hashlib.sha256()
    for arr, dtype in ((row, np.int64), (cls, np.float16), (embed, np.float16), (ok, np.bool_)):
        a = np.ascontiguousarray(arr, dtype=np.dtype(dtype).newbyteorder("<"))
        h.update(repr(a.shape).encode())
        h.update(memoryview(a).cast("B"))
    for e in error:
        h.update(e.encode("utf-8") + b"\0")
    return h.hexdigest()


def write_shard(fs: "FeatureSet", k: int, cls: np.ndarray, embed: np.ndarray, ok: np.ndarray,
                error: Sequence[str]) -> Path | None:
    """Write shard ``k`` of ``fs`` atomically; its path, or None when another process had published it
    first (that shard is left alone, and this call's work is not counted as written)."""
    import h5py  # here, not at the top: `attrib cache ls` and `--help` need no HDF5

    start, stop = fs.shard_range(k)
    n = stop - start
    L, D, E = fs.n_blocks, fs.width, fs.embed_dim
    if cls.shape != (n, L, D) or embed.shape != (n, E) or len(ok) != n or len(error) != n:
        raise StoreError(f"shard {k}: got cls {cls.shape}, embed {embed.shape}, {len(ok)} ok flags; "
                         f"expected ({n}, {L}, {D}), ({n}, {E}), {n}")
    final = fs.shard_path(k)
    if final.exists():
        return None
    row = np.arange(start, stop, dtype=np.int64)
    cls = np.ascontiguousarray(cls, dtype=DTYPE)
    embed = np.ascontiguousarray(embed, dtype=DTYPE)
    ok = np.asarray(ok, dtype=bool)
    error = [str(e) for e in error]
    with atomic.temporary(final) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("row", data=row)
            ds = f.create_dataset("cls", shape=(n, L, D), dtype=DTYPE, chunks=(chunk_rows(n, D), 1, D))
            for layer in range(L):  # block by block, flushed: each block's chunks (the partial
                ds[:, layer, :] = cls[:, layer, :]  # last one too) end up adjacent on disk
                f.flush()
            f.create_dataset("embed", data=embed, chunks=(chunk_rows(n, E), E))
            f.create_dataset("ok", data=ok)
            f.create_dataset("error", data=error, dtype=h5py.string_dtype("utf-8"))
            f.attrs["sha256"] = shard_checksum(row, cls, embed, ok, error)
            f.attrs["feature_set"] = fs.id
            f.attrs[shard_check.IDENTITY_ATTR] = fs.manifest.identity_hash
            f.attrs["complete"] = 1
        published = atomic.publish(tmp, final, atomic.KEEP)  # never replaces a shard finished first
    return final if published else None
