"""The shards of one extraction run: which to extract (the distributor), rows gathered per shard, and
writing finished ones (the writer).

Why apart from the loop in :mod:`attrib.extract.runner`: as in img2dataset's reader / writer /
distributor split, the forward pass knows nothing of claims, shard boundaries or the disk, and each of
these three can be tested without a model. Batches never cross a shard boundary, so a shard is complete
as soon as its last batch is back, and the writer publishes it from a background thread while the next
batches run.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable

import numpy as np

from attrib import claims
from attrib.store import FeatureSet


class ShardWriter:
    """Writes finished shards on a background thread so the forward pass never waits on the disk.

    ``shards`` and ``bytes`` count only what this process published: when two identical runs overlap, a
    shard the other one published first is left alone by ``write_shard`` and is not counted here.
    ``done(k)`` is called once shard k is on disk (its claim can go).
    """

    def __init__(self, fs: FeatureSet, done: Callable[[int], None]):
        self.fs, self.done = fs, done
        self.q: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.shards = 0
        self.bytes = 0
        self.thread = threading.Thread(target=self._run, name="attrib-shard-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            if self.error is not None:
                continue
            try:
                path = self.fs.write_shard(*item)  # None: another process published this shard first
                self.done(item[0])
                if path is not None:
                    self.shards += 1
                    self.bytes += path.stat().st_size
            except BaseException as exc:  # surfaced on the main thread
                self.error = exc

    def put(self, *item: Any) -> None:
        if self.error is not None:
            raise self.error
        self.q.put(item)

    def close(self) -> None:
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


class ShardBatches:
    """Batches of this rank's missing shards, never crossing a shard boundary (the batch sampler).

    Each shard is claimed just before its first batch is handed out (:mod:`attrib.claims`): a shard that
    another process (a second launch, an overlapping rank) finished meanwhile, or is extracting now, is
    skipped instead of recomputed. Claims are released as their shards are published (:meth:`release`),
    refreshed while this process works (:meth:`refresh`), and all released when the run ends.
    """

    def __init__(self, fs: FeatureSet, shards: list[int], batch_size: int):
        self.fs, self.shards, self.batch_size = fs, shards, batch_size
        self.skipped: list[int] = []  # published by another process meanwhile, or claimed by one
        self.claimed_elsewhere: list[int] = []
        self._held: dict[int, claims.Claim] = {}
        self._lock = threading.Lock()
        self._refreshed = time.monotonic()

    def __len__(self) -> int:
        return sum(-(-(b - a) // self.batch_size) for a, b in map(self.fs.shard_range, self.shards))

    def _take(self, k: int) -> bool:
        """Claim shard k if it is still missing and no live process holds it; False to skip it."""
        if self.fs.shard_path(k).exists():
            return False
        claim = self.fs.claim(k)
        if claim is None:
            self.claimed_elsewhere.append(k)
            return False
        if self.fs.shard_path(k).exists():  # published (and released) between the look and the claim
            claim.release()
            return False
        with self._lock:
            self._held[k] = claim
        return True

    def __iter__(self):
        for k in self.shards:
            if not self._take(k):
                self.skipped.append(k)
                continue
            start, stop = self.fs.shard_range(k)
            for b in range(start, stop, self.batch_size):
                yield list(range(b, min(b + self.batch_size, stop)))

    def release(self, k: int) -> None:
        with self._lock:
            claim = self._held.pop(k, None)
        if claim is not None:
            claim.release()

    def release_all(self) -> None:
        with self._lock:
            held, self._held = list(self._held.values()), {}
        for claim in held:
            claim.release()

    def refresh(self) -> None:
        """Refresh this process's claims now and then, so no other host takes them for stale."""
        if time.monotonic() - self._refreshed < claims.REFRESH_EVERY_S:
            return
        self._refreshed = time.monotonic()
        with self._lock:
            held = list(self._held.values())
        for claim in held:
            claim.refresh()


class ShardBuffer:
    """Rows of one shard gathered batch by batch; full -> handed to the writer."""

    def __init__(self, fs: FeatureSet, k: int):
        self.k = k
        self.start, stop = fs.shard_range(k)
        n = stop - self.start
        self.cls = np.zeros((n, fs.n_blocks, fs.width), np.float16)
        self.embed = np.zeros((n, fs.embed_dim), np.float16)
        self.ok = np.zeros(n, bool)
        self.error = [""] * n
        self.filled = 0

    def add(self, rows: np.ndarray, errors: list[str], cls: np.ndarray, embed: np.ndarray) -> int:
        """Store one batch (failed rows keep zero features and get their error); returns #failed."""
        local = rows - self.start
        good = np.array([e == "" for e in errors], dtype=bool)
        self.cls[local[good]] = cls[good]
        self.embed[local[good]] = embed[good]
        self.ok[local] = good
        for i, e in zip(local, errors):
            self.error[int(i)] = e
        self.filled += len(rows)
        return int((~good).sum())

    @property
    def full(self) -> bool:
        return self.filled == len(self.ok)


class Collector:
    """Takes each batch's features as the forward pass returns them, fills its shard's buffer, and hands a
    full shard to the writer; keeps the counts and the progress bar (anything with tqdm's ``update``,
    ``set_postfix`` and ``total``) honest about the shards another process took meanwhile."""

    def __init__(self, fs: FeatureSet, sampler: ShardBatches, writer: ShardWriter, bar: Any):
        self.fs, self.sampler, self.writer, self.bar = fs, sampler, writer, bar
        self.failed = self.done = 0
        self._buf: ShardBuffer | None = None
        self._seen_skips = 0
        bar.set_postfix(failed=0, refresh=False)

    def __call__(self, rows: np.ndarray, errors: list[str], cls: np.ndarray, embed: np.ndarray) -> None:
        k = int(rows[0]) // self.fs.shard_size
        if self._buf is None or self._buf.k != k:
            self._buf = ShardBuffer(self.fs, k)
        buf = self._buf
        self.failed += buf.add(rows, errors, cls, embed)
        if buf.full:
            self.writer.put(buf.k, buf.cls, buf.embed, buf.ok, buf.error)
            self._buf = None
        self.done += len(rows)
        skipped = self.sampler.skipped
        while self._seen_skips < len(skipped):  # finished (or being extracted) by another process
            a, b = self.fs.shard_range(skipped[self._seen_skips])
            self.bar.total -= b - a
            self._seen_skips += 1
        self.sampler.refresh()
        self.bar.set_postfix(failed=self.failed, refresh=False)
        self.bar.update(len(rows))
