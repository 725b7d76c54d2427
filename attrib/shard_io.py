"""Fast raw reads of shard arrays: the machinery behind :mod:`attrib.shard_read`.

Why it exists: a probe reads one block of every shard, i.e. float16 bytes that attrib wrote as one
contiguous run per block (see :mod:`attrib.shard_write`). Reading that run through HDF5's
chunk-by-chunk path, then casting with numpy's scalar fp16 loop, runs at a fraction of the disk's speed.
Here a region checked against HDF5's own chunk index is memory-mapped and cast in pieces on a thread
pool (numpy and torch release the GIL), several shards at once; anything else goes through h5py.
"""

from __future__ import annotations

import mmap
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

if TYPE_CHECKING:  # the datasets come from the caller's open file; no import needed at run time
    import h5py


class ShortFile(OSError):
    """A shard file ends before the bytes its chunk index points to."""


_POOL: tuple[int, ThreadPoolExecutor] | None = None
_POOL_LOCK = threading.Lock()
PIECE_ELEMENTS = 1 << 18  # conversion work unit; also: below this, the calling thread converts
READ_BYTES = 4 << 20  # direct-read work unit: large enough for the disk, small enough to overlap
TORCH_CAST: bool | None = None  # None: cast fp16 with torch when it is loaded; False: always numpy


def pool() -> ThreadPoolExecutor:
    """Per-process reader pool (a forked child must not reuse its parent's threads).

    Reads wait on the disk and conversions run in numpy/torch with the GIL released, so a few more
    threads than cores keep both the disk and the cores busy.
    """
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != os.getpid():
            n = max(2, min(8, 2 * (os.cpu_count() or 1)))
            _POOL = (os.getpid(), ThreadPoolExecutor(n, thread_name_prefix="attrib-read"))
        return _POOL[1]


_F16_SCALE = np.float32(2.0 ** 112)  # float32 exponent bias (127) minus float16's (15), as a power of two


def half_to_float(src: np.ndarray, dst: np.ndarray) -> None:
    """Exact float16 -> float32 for contiguous arrays, about 2x numpy's own cast (a scalar loop).

    The fp16 bits, shifted into a float32's exponent/mantissa position and multiplied by 2**112, give
    the value for normal and subnormal numbers alike; inf/NaN get their exponent restored, then the sign.
    """
    if not (src.flags.c_contiguous and dst.flags.c_contiguous) or src.shape != dst.shape:
        raise ValueError("half_to_float needs contiguous arrays of one shape")
    u = src.reshape(-1).view(np.uint16)
    d = dst.reshape(-1).view(np.uint32)
    step = 1 << 18
    x, sign = np.empty(min(step, u.size), np.uint32), np.empty(min(step, u.size), np.uint32)
    special = np.empty(min(step, u.size), bool)
    for a in range(0, u.size, step):
        n = min(step, u.size - a)
        xv, sv, spv = x[:n], sign[:n], special[:n]
        np.copyto(xv, u[a:a + n])
        np.bitwise_and(xv, 0x8000, out=sv)
        np.left_shift(sv, 16, out=sv)
        np.bitwise_and(xv, 0x7FFF, out=xv)
        np.greater_equal(xv, 0x7C00, out=spv)
        np.left_shift(xv, 13, out=xv)
        np.multiply(xv.view(np.float32), _F16_SCALE, out=xv.view(np.float32))
        np.bitwise_or(xv, sv, out=xv)
        if spv.any():
            xv[spv] |= np.uint32(0x7F800000)
        d[a:a + n] = xv


def assign(out: np.ndarray, pos: Any, data: np.ndarray, pick: np.ndarray | None) -> None:
    """``out[pos] = data[pick]`` with the fp16 -> float32 cast done fast: by torch's SIMD cast when the
    process has torch loaded anyway (importing it just for this would cost a probe process more than it
    saves), else by :func:`half_to_float`. Straight into ``out`` where ``out[pos]`` is one contiguous
    run; through a buffer of ``data``'s size otherwise (scattered rows, or a column slice of ``out``)."""
    src = np.ascontiguousarray(data if pick is None else data[pick])
    if src.dtype != np.float16 or out.dtype != np.float32:
        out[pos] = src
        return
    view = out[pos] if isinstance(pos, slice) and pos.step in (None, 1) else None
    dst = view if view is not None and view.flags.c_contiguous else np.empty(src.shape, np.float32)
    torch = sys.modules.get("torch") if TORCH_CAST is not False else None
    if torch is not None and hasattr(torch, "from_numpy"):
        torch.from_numpy(dst).copy_(torch.from_numpy(src))
    else:
        half_to_float(src, dst)
    if dst is not view:
        out[pos] = dst


def assign_pieces(out: np.ndarray, pos: Any, data: np.ndarray, pick: np.ndarray | None) -> None:
    """assign in cache-sized pieces (several times faster than one pass over 100 MB)."""
    n = len(pick) if pick is not None else len(data)
    step = max(1, PIECE_ELEMENTS // max(1, int(np.prod(data.shape[1:]))))
    for a in range(0, n, step):
        b = min(n, a + step)
        if pick is None:
            assign(out, slice(pos.start + a, pos.start + b), data[a:b], None)
        else:
            assign(out, pos[a:b], data, pick[a:b])


def chunk_spans(ds: "h5py.Dataset", lo: int, hi: int, block: int | None) -> list[tuple[int, int]]:
    """Byte ranges (offset, length) of the chunks holding rows [lo, hi) (of one block), merged."""
    cr = ds.chunks[0]
    spans: list[tuple[int, int]] = []
    for r in range(lo - lo % cr, hi, cr):
        coord = (r, block, 0) if block is not None else (r,) + (0,) * (ds.ndim - 1)
        info = ds.id.get_chunk_info_by_coord(coord)
        if info.byte_offset is None or not info.size:
            return []  # unallocated chunk: leave it to HDF5 (fill values)
        if spans and spans[-1][0] + spans[-1][1] == info.byte_offset:
            spans[-1] = (spans[-1][0], spans[-1][1] + info.size)
        else:
            spans.append((int(info.byte_offset), int(info.size)))
    return spans


def direct_region(ds: "h5py.Dataset", lo: int, hi: int, block: int | None) -> tuple[int, int, int] | None:
    """(file offset, bytes, first row in region) when rows [lo, hi) of ``ds`` (one block of it) are one
    contiguous run of raw little-endian fp16 chunks, exactly as attrib writes them; else None.

    Such a region is read directly (memory-mapped, in pieces, in parallel) instead of through HDF5's
    chunk-by-chunk path; the layout is checked against HDF5's own chunk index first.
    """
    if ds.chunks is None or ds.dtype != np.dtype("<f2") or ds.id.get_create_plist().get_nfilters() != 0:
        return None
    if block is not None and ds.chunks[1:] != (1, ds.shape[2]):
        return None
    if block is None and ds.chunks[1:] != ds.shape[1:]:
        return None
    spans = chunk_spans(ds, lo, hi, block)
    cr = ds.chunks[0]
    first = lo - lo % cr
    n_chunks = -(-(hi - first) // cr)
    row_bytes = int(np.prod(ds.chunks[1:])) * 2
    if len(spans) != 1 or spans[0][1] != n_chunks * cr * row_bytes:
        return None
    return spans[0][0], spans[0][1], first


def read_rows(path: Path, offset: int, n_rows: int, width: int, out: np.ndarray, pos: Any,
               pick: np.ndarray | None) -> None:
    """Put ``n_rows`` raw fp16 rows at ``offset`` of ``path`` (or rows ``pick`` of them) at ``pos``.

    The rows are memory-mapped and cast straight from the page cache: a read() would first copy every
    byte into a buffer, which costs as much CPU as the cast itself. The file size is checked first, so a
    short file is an error, not a SIGBUS.
    """
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    length = offset - start + n_rows * width * 2
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size < start + length:
            raise ShortFile(f"{path}: file ends inside a chunk (truncated or corrupted shard)")
        m = mmap.mmap(f.fileno(), length, access=mmap.ACCESS_COPY, offset=start)  # private, never written
    try:
        if hasattr(m, "madvise"):
            m.madvise(mmap.MADV_WILLNEED)
        buf = np.frombuffer(m, dtype="<f2", count=n_rows * width, offset=offset - start).reshape(n_rows, width)
        assign(out, pos, buf, pick)
    finally:
        buf = None
        try:
            m.close()
        except BufferError:  # a view is still referenced (by an exception's traceback): the GC unmaps it
            pass


def direct_pieces(region: tuple[int, int, int], lo: int, hi: int, width: int, pos: Any,
                   pick: np.ndarray | None) -> Iterator[tuple[int, int, Any, np.ndarray | None]]:
    """Split a direct read into pieces of about READ_BYTES: (offset, rows, out positions, pick).

    Rows are laid out linearly in the region, so any row range is one byte range; small pieces let the
    pool overlap one piece's disk wait with another's conversion.
    """
    offset, _length, first = region
    row_bytes = 2 * width
    step = max(1, READ_BYTES // row_bytes)
    if pick is None:
        for a in range(lo, hi, step):
            b = min(hi, a + step)
            yield offset + (a - first) * row_bytes, b - a, slice(pos.start + a - lo, pos.start + b - lo), None
        return
    order = np.argsort(pick, kind="stable")
    want = pick[order] + lo  # shard-local rows, ascending
    for a in range(lo, hi, step):
        i, j = np.searchsorted(want, [a, min(hi, a + step)])
        if j > i:
            top = int(want[j - 1]) + 1
            yield offset + (a - first) * row_bytes, top - a, pos[order[i:j]], want[i:j] - a
