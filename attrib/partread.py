"""Reading rows that live in several feature sets: a grown set's parts, a union's members.

Why one module: a grown feature set (:mod:`attrib.parts`) and a union of feature sets
(:mod:`attrib.union`) both map each of their rows to a part and a row in that part, and from there reading
is the same job. Rows are checked once, grouped by part so that each part reads its own rows as any feature
set does (per shard, contiguous), in chunks of bounded size whatever the part's size, and scattered back
into the caller's order. Keeping that in one place keeps the two readers from drifting apart in their
checks, their error messages and their memory use.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Callable, Sequence

import numpy as np
from numpy.typing import DTypeLike

from attrib.store import FeatureSet

READ_CHUNK_ROWS = 1 << 18  # rows per part read: bounds the temporary copy a part's read makes


class PartRows:
    """Mixin: ``block``, ``embed`` and ``status`` for an object whose rows live in parts.

    The class provides ``n_images``, ``n_blocks``, ``width``, ``embed_dim``, ``require_complete()`` and
    :meth:`_row_map`: the parts, and for each row its part's position and its row in that part.
    """

    n_images: int
    n_blocks: int
    width: int
    embed_dim: int

    @abstractmethod
    def _row_map(self) -> tuple[Sequence[FeatureSet], np.ndarray, np.ndarray]:
        """(parts, part (n,) positions into parts, row (n,) in that part), for every row."""

    def _by_part(self, rows: Sequence[int] | np.ndarray | None) -> tuple[int, list[tuple[int, np.ndarray, np.ndarray]]]:
        """(number of rows, [(part position, output positions, rows in that part)]) for ``rows``
        (None: every row, which needs every part complete, as a feature set's whole read does)."""
        parts, part, local = self._row_map()
        if rows is None:
            self.require_complete()
        else:
            rows = np.asarray(rows, dtype=np.int64)
            if rows.ndim != 1:
                raise ValueError("rows must be a 1-d sequence of row indices")
            if rows.size and (rows.min() < 0 or rows.max() >= self.n_images):
                raise IndexError(f"row index out of range [0, {self.n_images})")
            part, local = part[rows], local[rows]
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(len(parts) + 1))
        groups = [(k, order[a:b], local[order[a:b]]) for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))
                  if b > a]
        return len(part), groups

    def _gather(self, read: Callable[[FeatureSet, np.ndarray], np.ndarray], width: int,
                rows: Sequence[int] | np.ndarray | None, dtype: DTypeLike = np.float32) -> np.ndarray:
        """``read(part, rows in it)`` for each part, scattered into the caller's row order as ``dtype``."""
        parts = self._row_map()[0]
        n, groups = self._by_part(rows)
        out = np.empty((n, width), dtype=dtype)
        for k, pos, local in groups:
            for lo in range(0, pos.size, READ_CHUNK_ROWS):
                out[pos[lo:lo + READ_CHUNK_ROWS]] = read(parts[k], local[lo:lo + READ_CHUNK_ROWS])
        return out

    def block(self, layer: int, rows: Sequence[int] | np.ndarray | None = None,
              dtype: DTypeLike = np.float32) -> np.ndarray:
        """CLS token after block ``layer`` as float32 (n, D), or as stored (``dtype``: see
        :meth:`attrib.store.FeatureSet.block`), read from the parts holding ``rows``."""
        if not -self.n_blocks <= layer < self.n_blocks:
            raise IndexError(f"block {layer} out of range: this feature set has blocks 0..{self.n_blocks - 1}")
        return self._gather(lambda p, r: p.block(layer, r, dtype), self.width, rows, dtype)

    def embed(self, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Final projected embedding as float32 (n, E), read from the parts holding ``rows``."""
        return self._gather(lambda p, r: p.embed(r), self.embed_dim, rows)

    def status(self) -> tuple[np.ndarray, list[str]]:
        """(ok flags, error texts) for every row, from each part's own."""
        parts = self._row_map()[0]
        n, groups = self._by_part(None)
        ok = np.zeros(n, dtype=bool)
        errors = [""] * n
        for k, pos, local in groups:
            part_ok, part_errors = parts[k].status()
            ok[pos] = part_ok[local]
            failed = ~part_ok[local]
            for at, r in zip(pos[failed].tolist(), local[failed].tolist()):
                errors[at] = part_errors[r]
        return ok, errors
