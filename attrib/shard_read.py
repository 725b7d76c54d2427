"""Reading one array of a feature set for any rows: the loop behind :meth:`attrib.store.FeatureSet.block`.

Why apart from :mod:`attrib.store`: that module says what a feature set is (its files, its manifest,
which shards are whole); this one only turns a list of rows into an array, shard by shard. Rows are
grouped by shard in the caller's order, each shard is opened through :meth:`FeatureSet.open_shard` (so
every read checks that the shard is whole and holds its own rows), and the bytes themselves are read by
:mod:`attrib.shard_io`: straight from the page cache on a thread pool where the layout is attrib's own,
through h5py otherwise.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
from numpy.typing import DTypeLike

from attrib import shard_io
from attrib.manifest import DTYPE
from attrib.store_errors import ShardDamaged, StoreError

if TYPE_CHECKING:
    from attrib.store import FeatureSet


def read_dtype(dtype: DTypeLike) -> np.dtype:
    """float32 (what the probes compute in) or the stored float16 (half the memory, the same values)."""
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(DTYPE)):
        raise ValueError(f"features are read as float32 or as stored ({DTYPE}), not {dt}")
    return dt


def by_shard(rows: np.ndarray, shard_size: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(k, shard-local rows, their positions in ``rows``) for each shard that ``rows`` touch."""
    shard = rows // shard_size
    order = np.argsort(shard, kind="stable")
    bounds = np.flatnonzero(np.diff(shard[order])) + 1
    for pos in np.split(order, bounds):
        if pos.size:
            k = int(shard[pos[0]])
            yield k, rows[pos] - k * shard_size, pos


def _groups(fs: "FeatureSet", rows: Sequence[int] | np.ndarray | None) -> tuple[int, Iterator[tuple[int, Any, Any]]]:
    """(rows to read, (k, local rows or None for all, output positions) per shard); checks the rows."""
    if rows is None:
        fs.require_complete()
        return fs.n_images, ((k, None, slice(*fs.shard_range(k))) for k in range(fs.n_shards))
    rows = np.asarray(rows, dtype=np.int64)
    if rows.ndim != 1:
        raise ValueError("rows must be a 1-d sequence of row indices")
    if rows.size and (rows.min() < 0 or rows.max() >= fs.n_images):
        raise IndexError(f"row index out of range [0, {fs.n_images})")
    return len(rows), by_shard(rows, fs.shard_size)


def read(fs: "FeatureSet", dataset: str, width: int, rows: Sequence[int] | np.ndarray | None,
         block: int | None = None, dtype: DTypeLike = np.float32) -> np.ndarray:
    """``dataset`` of ``fs`` (one block of it) for ``rows`` (all when None), as float32 or as stored.

    Each shard's rows [lo, hi) are one contiguous byte range (see :mod:`attrib.shard_write`), read in
    pieces on a thread pool, several shards at once; other layouts go through h5py.
    """
    n, groups = _groups(fs, rows)
    out = np.empty((n, width), dtype=read_dtype(dtype))
    pool = shard_io.pool()
    pending: list[Future] = []
    try:
        for k, local, pos in groups:
            path = fs.shard_path(k)
            start, stop = fs.shard_range(k)
            lo, hi = (0, stop - start) if local is None else (int(local.min()), int(local.max()) + 1)
            pick = None if local is None else local - lo
            with fs.open_shard(k) as f:
                ds = f[dataset]
                region = shard_io.direct_region(ds, lo, hi, block)
                if region is None:  # any other layout: HDF5 reads it
                    data = ds[lo:hi, block, :] if block is not None else ds[lo:hi]
                    if not np.can_cast(data.dtype, out.dtype, casting="safe"):
                        raise StoreError(f"{path}: {dataset!r} holds {data.dtype} values, which {out.dtype} "
                                         f"cannot hold exactly (attrib writes {DTYPE}); read it as float32")
            if region is not None:
                pending.extend(pool.submit(shard_io.read_rows, path, off, n_rows, width, out, p, pk)
                               for off, n_rows, p, pk in shard_io.direct_pieces(region, lo, hi, width, pos, pick))
            elif data.size < shard_io.PIECE_ELEMENTS:
                shard_io.assign(out, pos, data, pick)
            else:
                pending.append(pool.submit(shard_io.assign_pieces, out, pos, data, pick))
        for fut in pending:
            fut.result()
    except shard_io.ShortFile as exc:
        raise ShardDamaged(f"{exc}. {fs.fix_hint}", "truncated inside a chunk") from None
    finally:
        for fut in pending:
            fut.cancel() or fut.exception()
    return out
