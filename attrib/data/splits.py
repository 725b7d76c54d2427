"""Open-set splits: which cached rows train, validate and test a split, and how labels are assigned.

A split names its known generators (class 0 is always ``real``, then the known generators in the
split's order) and its unknown generators. Rows come from the feature set's image list:

- train and validation: images found in ``train/`` (validation is held out from them by seed);
- test: images found in ``val/`` (GenImage's held-out folder);
- unknown generators get validation and test rows too (validation ones serve the ``paper`` protocol).

Images that failed to decode (``ok=False`` in the cache) are never used. Datasets without train/val
folders (subset ``all``) are split by seed: 60% train, 20% validation, 20% test.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from attrib.data.catalog import REAL, ImageList

DEFAULT_TRAIN_PER_CLASS = 4000
DEFAULT_VAL_PER_CLASS = 1000
DEFAULT_TEST_PER_CLASS = 2000
VAL_FRACTION = 0.2


class SplitError(ValueError):
    """A split cannot be built from this image list; the message names the source or class."""


@dataclass(frozen=True)
class Split:
    name: str
    known: tuple[str, ...]
    unknown: tuple[str, ...]

    @property
    def classes(self) -> tuple[str, ...]:
        return (REAL,) + tuple(self.known)


@dataclass
class SplitRows:
    """Row indices into the feature set and integer labels (index into ``split.classes``)."""

    split: Split
    train: np.ndarray
    y_train: np.ndarray
    val: np.ndarray
    y_val: np.ndarray
    test: np.ndarray
    y_test: np.ndarray
    val_unknown: np.ndarray
    val_unknown_source: np.ndarray
    test_unknown: np.ndarray
    test_unknown_source: np.ndarray
    notes: list[str] = field(default_factory=list)

    def sizes(self) -> dict[str, int]:
        return {k: int(len(getattr(self, k))) for k in ("train", "val", "test", "val_unknown", "test_unknown")}


def builtin_splits(dataset_kind: str) -> dict[str, Split]:
    """The splits that ship with attrib for ``demo`` and ``genimage`` feature sets."""
    if dataset_kind == "genimage":
        from attrib.data.genimage import SPLITS
    elif dataset_kind == "demo":
        from attrib.data.demo import SPLITS
    else:
        return {}
    return {str(k): Split(str(k), known, unknown) for k, (known, unknown) in SPLITS.items()}


def _key(seed: int, path: str) -> bytes:
    return hashlib.blake2b(f"{seed}\0{path}".encode(), digest_size=8).digest()


def _shuffled(rows: list[int], images: ImageList, seed: int) -> list[int]:
    """Order rows by a seeded hash of their path: independent of listing order and of other classes."""
    return sorted(rows, key=lambda r: _key(seed, images.paths[r]))


def split_rows(images: ImageList, ok: np.ndarray, split: Split, seed: int = 0,
               train_per_class: int | None = DEFAULT_TRAIN_PER_CLASS,
               val_per_class: int | None = DEFAULT_VAL_PER_CLASS,
               test_per_class: int | None = DEFAULT_TEST_PER_CLASS) -> SplitRows:
    """Build the rows of ``split`` (see the module docstring for the protocol)."""
    overlap = set(split.known) & set(split.unknown)
    if overlap:
        raise SplitError(f"split {split.name}: {sorted(overlap)} are both known and unknown")
    if REAL in split.unknown:
        raise SplitError(f"split {split.name}: '{REAL}' is always a known class")
    by_src: dict[str, dict[str, list[int]]] = {}
    for i, (s, sub) in enumerate(zip(images.sources, images.subsets)):
        if ok[i]:
            by_src.setdefault(s, {}).setdefault(sub, []).append(i)
    notes = []
    n_failed = int((~np.asarray(ok, bool)).sum())
    if n_failed:
        notes.append(f"{n_failed} images failed to decode at extraction and are excluded")

    def parts(src: str) -> tuple[list[int], list[int], list[int]]:
        subs = by_src.get(src)
        if not subs:
            raise SplitError(f"split {split.name}: source {src!r} has no usable images in this feature set "
                                f"(sources present: {', '.join(sorted(by_src)) or 'none'})")
        if "train" in subs or "val" in subs or "test" in subs:
            pool = _shuffled(subs.get("train", []), images, seed)
            test = _shuffled(subs.get("val", []) + subs.get("test", []), images, seed)
            n_val = int(len(pool) * VAL_FRACTION)
            val, train = pool[:n_val], pool[n_val:]
        else:
            allrows = _shuffled([r for rs in subs.values() for r in rs], images, seed)
            n = len(allrows)
            a, b = int(n * 0.6), int(n * 0.8)
            train, val, test = allrows[:a], allrows[a:b], allrows[b:]
        cap = lambda rs, c: rs if c is None else rs[:c]  # noqa: E731
        return cap(train, train_per_class), cap(val, val_per_class), cap(test, test_per_class)

    tr, ytr, va, yva, te, yte = [], [], [], [], [], []
    for label, src in enumerate(split.classes):
        a, b, c = parts(src)
        for name, rs in (("train", a), ("validation", b), ("test", c)):
            if not rs:
                raise SplitError(f"split {split.name}: known class {src!r} has no {name} images")
        tr += a; ytr += [label] * len(a)
        va += b; yva += [label] * len(b)
        te += c; yte += [label] * len(c)
    vu, vus, tu, tus = [], [], [], []
    for src in split.unknown:
        _, b, c = parts(src)
        if not c:
            raise SplitError(f"split {split.name}: unknown generator {src!r} has no test images")
        vu += b; vus += [src] * len(b)
        tu += c; tus += [src] * len(c)
    arr = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731
    obj = lambda x: np.asarray(x, dtype=object)  # noqa: E731
    return SplitRows(split, arr(tr), arr(ytr), arr(va), arr(yva), arr(te), arr(yte),
                     arr(vu), obj(vus), arr(tu), obj(tus), notes)


class SplitSource(Protocol):
    """Where a study gets its splits: named splits, each giving rows for a seed.

    Sampled splits (built-in, or defined by a YAML/JSON file) draw their rows by seed; fixed splits (the
    paper's POSE files) return the same rows for every seed. Studies only use this interface.
    """

    def names(self) -> list[str]: ...

    def split(self, name: str) -> Split: ...

    def rows(self, name: str, seed: int) -> SplitRows: ...


class SampledSplits:
    """Splits whose rows are drawn from an image list by seed, with per-class caps (see :func:`split_rows`)."""

    def __init__(self, images: ImageList, ok: np.ndarray, splits: dict[str, Split],
                 train_per_class: int | None = DEFAULT_TRAIN_PER_CLASS,
                 val_per_class: int | None = DEFAULT_VAL_PER_CLASS,
                 test_per_class: int | None = DEFAULT_TEST_PER_CLASS):
        self.images, self.ok, self._splits = images, ok, dict(splits)
        self.caps = dict(train_per_class=train_per_class, val_per_class=val_per_class,
                         test_per_class=test_per_class)
        self._cache: dict[tuple[str, int], SplitRows] = {}

    def names(self) -> list[str]:
        return list(self._splits)

    def split(self, name: str) -> Split:
        return self._splits[name]

    def rows(self, name: str, seed: int) -> SplitRows:
        if (name, seed) not in self._cache:
            self._cache[(name, seed)] = split_rows(self.images, self.ok, self._splits[name], seed=seed, **self.caps)
        return self._cache[(name, seed)]
