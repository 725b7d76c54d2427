"""The per-block feature cache of a study: the blocks it needs, read from HDF5 once, shared by its jobs.

Why: a study cuts its work into many (split, layer, shots, seed) jobs, each needing a few blocks of the
same rows. Reading the HDF5 shards once into per-block float32 ``.npy`` files in a temporary folder, and
opening those memory-mapped, lets ``--jobs N`` processes share one copy in the page cache instead of
each reading and holding its own.

A study with evaluation features (``--eval-features``) has two: its training rows read from the training
features, its validation and test rows from the evaluation features (:attr:`FeatureCache.eval`).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import numpy as np

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


@contextlib.contextmanager
def feature_cache(fs: FeatureSet, rows: np.ndarray, blocks: Iterable[int], progress: bool = False,
                  eval_fs: FeatureSet | None = None, eval_rows: np.ndarray | None = None) -> Iterator[FeatureCache]:
    """A :class:`FeatureCache` in a temporary folder (``$TMPDIR``), removed afterwards. With ``eval_fs``,
    its ``eval`` cache holds ``eval_rows`` of those features (``rows`` are then the training rows only)."""
    tmp = Path(tempfile.mkdtemp(prefix="attrib-features-"))
    try:
        blocks = sorted(set(blocks))
        cache = FeatureCache.build(fs, rows, blocks, tmp, progress)
        if eval_fs is not None:
            cache.eval = FeatureCache.build(eval_fs, np.zeros(0, np.int64) if eval_rows is None else eval_rows,
                                            blocks, tmp, progress, prefix="eval")
        yield cache
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
