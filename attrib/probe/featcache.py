"""The per-block feature cache of a study: the blocks it needs, read from HDF5 once, shared by its jobs.

Why: a study cuts its work into many (split, layer, shots, seed) jobs, each needing a few blocks of the
same rows. Reading the HDF5 shards once into per-block float32 ``.npy`` files in a temporary folder, and
opening those memory-mapped, lets ``--jobs N`` processes share one copy in the page cache instead of
each reading and holding its own.

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
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import numpy as np

from attrib import atomic
from attrib.probe.options import StudyError

if TYPE_CHECKING:  # the cache only calls fs.block and fs.width (a FeatureUnion has both)
    from attrib.store import FeatureSet


class FeatureCache:
    """The blocks a study needs, for the rows it needs, as float32 ``.npy`` files opened memory-mapped.

    Pickles as folder + row index (a few MB at most), so parallel jobs share the arrays through the page
    cache instead of receiving copies.
    """

    def __init__(self, folder: Path, rows: np.ndarray, blocks: dict[int, str],
                 eval_cache: "FeatureCache | None" = None):
        self.folder, self.rows, self.paths = folder, rows, blocks
        self.eval = eval_cache  # where validation and test rows are read, when not from these features

    @classmethod
    def build(cls, fs: FeatureSet, rows: np.ndarray, blocks: Iterable[int], folder: Path,
              progress: bool = False, prefix: str = "block") -> "FeatureCache":
        from tqdm import tqdm

        rows = np.unique(np.asarray(rows, dtype=np.int64))
        paths = {}
        for b in tqdm(sorted(set(blocks)), desc=f"read features ({prefix})" if prefix != "block" else "read features",
                      unit="block", disable=not progress, leave=False):
            path = folder / f"{prefix}-{b:03d}.npy"
            mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(rows), fs.width))
            mm[:] = fs.block(b, rows)
            mm.flush()
            del mm
            paths[b] = str(path)
        return cls(folder, rows, paths)

    def take(self, layer: Sequence[int], rows: np.ndarray) -> np.ndarray:
        """Features of ``rows`` for ``layer`` (its blocks concatenated), float32 (len(rows), width)."""
        pos = np.searchsorted(self.rows, rows)
        if len(rows) and (pos.max() >= len(self.rows) or not np.array_equal(self.rows[pos], rows)):
            raise StudyError("internal: rows requested that were not read into the feature cache")
        parts = [np.load(self.paths[b], mmap_mode="r")[pos] for b in layer]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    def take_eval(self, layer: Sequence[int], rows: np.ndarray) -> np.ndarray:
        """Like :meth:`take`, for validation and test rows: rows of the evaluation features when the study
        has them (``rows`` then index those), else of these."""
        return (self.eval or self).take(layer, rows)


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
    """A :class:`FeatureCache` of ``rows`` in a temporary folder (``scratch`` or ``$TMPDIR``), removed
    afterwards (also on SIGTERM); stale ones of dead processes are removed first.

    ``eval_rows``: the validation and test rows, read from ``eval_fs`` into the cache's ``eval`` cache
    when given (``rows`` are then the training rows), else from ``fs`` with ``rows``.
    """
    if scratch is not None:
        Path(scratch).mkdir(parents=True, exist_ok=True)
    remove_stale(scratch)
    tag = f"{PREFIX}{socket.gethostname()}-{os.getpid()}-"
    eval_rows = np.zeros(0, np.int64) if eval_rows is None else np.asarray(eval_rows, dtype=np.int64)
    blocks = sorted(set(blocks))
    with _sigterm_exits():
        tmp = Path(tempfile.mkdtemp(prefix=tag, dir=scratch))
        try:
            if eval_fs is None:
                yield FeatureCache.build(fs, np.concatenate([np.asarray(rows, np.int64), eval_rows]), blocks, tmp,
                                         progress)
            else:
                cache = FeatureCache.build(fs, rows, blocks, tmp, progress)
                cache.eval = FeatureCache.build(eval_fs, eval_rows, blocks, tmp, progress, prefix="eval")
                yield cache
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
