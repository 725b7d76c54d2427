"""The per-block feature cache of a study: the blocks it needs, read from HDF5 once, shared by its jobs.

Why: a study cuts its work into many (split, layer, shots, seed) jobs, each needing a few blocks of the
same rows. Reading the HDF5 shards once into per-block ``.npy`` files in a temporary folder, and
opening those memory-mapped, lets ``--jobs N`` processes share one copy in the page cache instead of
each reading and holding its own. The files keep the shards' float16, half the bytes to write and to hold
of float32, and a job casts its own rows: float32 holds every float16 exactly, so the numbers are the same.

The blocks are read by a thread of the study's process, in the order the jobs need them, while the jobs
already run: a job waits only for its own blocks. (Read all first, the paper's protocol on a 2-core
machine spent its first 40 s of 300 reading twelve blocks, with the workers idle.) Each file appears
under its final name only when complete; if reading fails, a ``FAILED`` file in the folder says why and
every job waiting for a block raises that error.

A study with evaluation features (``--eval-features``) has two: its training rows read from the training
features, its validation and test rows from the evaluation features (:attr:`FeatureCache.eval`).

Those files can be gigabytes (GenImage), so they must not outlive the study: the folder is removed when
the study ends, also on SIGTERM (what ``timeout``, ``scancel`` and ``kill`` send), and its name carries
the host and process id so that a later study removes the folders of processes that died by SIGKILL.
With ``--scratch DIR`` (a cluster's shared file system) the folder goes there instead of ``$TMPDIR``,
so that workers on other machines can open it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import numpy as np

from attrib import atomic, shard_io
from attrib.manifest import DTYPE
from attrib.probe.options import StudyError

if TYPE_CHECKING:  # the cache only calls fs.block and reads fs.width (a FeatureUnion has both)
    from attrib.store import FeatureSet


FAILED = "FAILED"  # in the cache's folder: why reading the features stopped
# Rows read and written, or gathered and cast, at a time: a million-row block then never sits whole in a
# process's memory on its way to or from the file (and on a VM, where fresh memory is slow to come by,
# a full-data take ran twice as fast: 14-17 against 35 s for 1.3M rows)
WRITE_ROWS = 65536
TAKE_ROWS = 16384


class FeatureCache:
    """The blocks a study needs, for the rows it needs, as float16 ``.npy`` files opened memory-mapped.

    Pickles as folder + row index (a few MB at most), so parallel jobs share the arrays through the page
    cache instead of receiving copies. A block's file may still be being read when a job asks for it
    (:func:`feature_cache`): :meth:`take` then waits for it.
    """

    def __init__(self, folder: Path, rows: np.ndarray, blocks: dict[int, str],
                 eval_cache: "FeatureCache | None" = None):
        self.folder, self.rows, self.paths = folder, rows, blocks
        self.eval = eval_cache  # where validation and test rows are read, when not from these features

    @classmethod
    def planned(cls, folder: Path, rows: np.ndarray, blocks: Iterable[int], prefix: str = "block") -> "FeatureCache":
        """A cache of ``rows`` whose block files are still to be written (:meth:`write_block`)."""
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        return cls(folder, rows, {b: str(folder / f"{prefix}-{b:03d}.npy") for b in dict.fromkeys(blocks)})

    def write_block(self, fs: FeatureSet, block: int) -> None:
        """Read ``block`` of the cache's rows and publish its file, complete, under its final name."""
        path = Path(self.paths[block])
        part = path.with_name(f".{path.name}.part")
        n = len(self.rows)
        with open(part, "wb") as f:  # closing it is what makes it visible on a shared (NFS) scratch folder
            np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(DTYPE)),
                                                     "fortran_order": False, "shape": (n, fs.width)})
            for a in range(0, n, WRITE_ROWS):
                f.write(np.ascontiguousarray(fs.block(block, self.rows[a:a + WRITE_ROWS], dtype=DTYPE)).data)
        os.replace(part, path)

    def take(self, layer: Sequence[int], rows: np.ndarray) -> np.ndarray:
        """Features of ``rows`` for ``layer`` (its blocks concatenated), float32 (len(rows), width)."""
        pos = np.searchsorted(self.rows, rows)
        if len(rows) and (pos.max() >= len(self.rows) or not np.array_equal(self.rows[pos], rows)):
            raise StudyError("internal: rows requested that were not read into the feature cache")
        blocks = [self._block(b) for b in layer]
        out = np.empty((len(rows), sum(b.shape[1] for b in blocks)), dtype=np.float32)
        col = 0
        for b in blocks:  # each into its columns of out, float16 -> float32 (exact; torch's cast if loaded)
            for a in range(0, len(rows), TAKE_ROWS):
                shard_io.assign(out[:, col:col + b.shape[1]], slice(a, a + TAKE_ROWS), b[pos[a:a + TAKE_ROWS]], None)
            col += b.shape[1]
        return out

    def take_eval(self, layer: Sequence[int], rows: np.ndarray) -> np.ndarray:
        """Like :meth:`take`, for validation and test rows: rows of the evaluation features when the study
        has them (``rows`` then index those), else of these."""
        return (self.eval or self).take(layer, rows)

    def _block(self, block: int) -> np.ndarray:
        path = self.paths[block]
        delay = 0.01
        while not os.path.exists(path):
            failed = Path(self.folder) / FAILED
            if failed.exists():
                raise _read_failed(failed.read_text(encoding="utf-8"))
            if not Path(self.folder).is_dir():
                raise StudyError(f"the study's feature cache {self.folder} is gone (its study ended or was killed)")
            time.sleep(delay)
            delay = min(2 * delay, 0.25)
        return np.load(path, mmap_mode="r")


def check_space(folder: Path, steps: Sequence[tuple[FeatureCache, "FeatureSet", int]]) -> None:
    """Refuse a cache that cannot fit in ``folder``'s file system, before any block is read.

    Why up front: a full disk would otherwise stop the study at its last blocks, possibly hours in.
    """
    need = sum(len(cache.rows) * fs.width * np.dtype(DTYPE).itemsize for cache, fs, _ in steps)
    free = shutil.disk_usage(folder).free
    if need > free:
        raise StudyError(f"the study's feature cache needs {need / 1e9:.2f} GB in {folder.parent} ({len(steps)} "
                         f"blocks of {DTYPE} rows) but only {free / 1e9:.2f} GB is free there: point --scratch DIR "
                         f"(or $TMPDIR) at a larger disk, or study fewer layers or splits at a time")


def _read_failed(cause: str) -> StudyError:
    """The error of a study whose features could not be read, in the jobs and in the study's process alike."""
    return StudyError(f"reading the study's features failed: {cause}")


class _Reader(threading.Thread):
    """Writes the caches' blocks, one after the other, in the order given (the order jobs need them).

    Stops between two blocks when asked (the study ended or failed); on an error, writes its cause to
    ``FAILED`` for the jobs and keeps the exception for the study's own process (:attr:`error`).
    """

    def __init__(self, steps: list[tuple[FeatureCache, "FeatureSet", int]], folder: Path, progress: bool):
        super().__init__(name="attrib-read-features", daemon=True)
        self.steps, self.folder, self.progress = steps, folder, progress
        self.halt = threading.Event()
        self.error: BaseException | None = None

    @property
    def cause(self) -> str:
        """What stopped the reading, as ``FAILED`` holds it."""
        return f"{type(self.error).__name__}: {self.error}"

    def run(self) -> None:
        from tqdm import tqdm

        try:
            for cache, fs, block in tqdm(self.steps, desc="read features", unit="block", disable=not self.progress,
                                         leave=False):
                if self.halt.is_set():
                    return
                cache.write_block(fs, block)
        except BaseException as exc:  # noqa: BLE001 - handed to the jobs and to the study's process
            self.error = exc
            with contextlib.suppress(OSError):  # the folder may already be gone (the study is ending)
                atomic.write_text(self.folder / FAILED, self.cause)


PREFIX = "attrib-features-"
_NAME = re.compile(re.escape(PREFIX) + r"(?P<host>.+)-(?P<pid>\d+)-[^-]+")


def remove_stale(parent: str | os.PathLike | None = None) -> list[Path]:
    """Remove the feature caches under ``parent`` (default ``$TMPDIR``) left by dead processes of this
    host (a study killed by SIGKILL or a crash); the removed folders. Folders of live processes, of other
    hosts (a shared scratch folder) and of unknown names are left alone."""
    parent = Path(parent or tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for path in entries:
        m = _NAME.fullmatch(path.name)
        if m and path.is_dir() and atomic.owner_dead(m["host"], int(m["pid"])):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """Turn SIGTERM into SystemExit while the cache exists, so ``finally`` blocks remove it. Only the main
    thread can set handlers; elsewhere (a thread of a larger program) the program's own handling stays."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def exit_now(signum, _frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_now)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def feature_cache(fs: FeatureSet, rows: np.ndarray, blocks: Iterable[int], progress: bool = False,
                  eval_fs: FeatureSet | None = None, eval_rows: np.ndarray | None = None,
                  scratch: str | os.PathLike | None = None) -> Iterator[FeatureCache]:
    """A :class:`FeatureCache` of ``rows`` in a temporary folder (``scratch`` or ``$TMPDIR``), its blocks
    read in the background in the order of ``blocks`` (give them in the order the jobs need them), removed
    afterwards (also on SIGTERM); stale ones of dead processes are removed first.

    ``eval_rows``: the validation and test rows, read from ``eval_fs`` into the cache's ``eval`` cache
    when given (``rows`` are then the training rows), else from ``fs`` with ``rows``.
    """
    if scratch is not None:
        Path(scratch).mkdir(parents=True, exist_ok=True)
    remove_stale(scratch)
    tag = f"{PREFIX}{socket.gethostname()}-{os.getpid()}-"
    eval_rows = np.zeros(0, np.int64) if eval_rows is None else np.asarray(eval_rows, dtype=np.int64)
    blocks = list(dict.fromkeys(blocks))
    with _sigterm_exits():
        tmp = Path(tempfile.mkdtemp(prefix=tag, dir=scratch))
        reader = None
        try:
            if eval_fs is None:
                cache = FeatureCache.planned(tmp, np.concatenate([np.asarray(rows, np.int64), eval_rows]), blocks)
                steps = [(cache, fs, b) for b in blocks]
            else:
                cache = FeatureCache.planned(tmp, rows, blocks)
                cache.eval = FeatureCache.planned(tmp, eval_rows, blocks, prefix="eval")
                steps = [(c, f, b) for b in blocks for c, f in ((cache, fs), (cache.eval, eval_fs))]
            check_space(tmp, steps)
            reader = _Reader(steps, tmp, progress)
            reader.start()
            yield cache
            reader.join()
            if reader.error is not None:  # a block no job got to read (their jobs failed for other reasons)
                raise _read_failed(reader.cause) from reader.error
        finally:
            if reader is not None:
                reader.halt.set()
                reader.join()
            shutil.rmtree(tmp, ignore_errors=True)
