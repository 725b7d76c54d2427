"""The sampling protocol: which rows of an image list train, validate and test a split, drawn by seed.

Sampling protocol (:func:`split_rows`), per class, for a seed ``s``:

1. Images that failed to decode at extraction (``ok=False``) are dropped (and counted in the notes).
2. The class's images are ordered by a hash of ``(s, file name)``: the order does not depend on listing
   order or on other classes, and images with the same file name (the same ImageNet photo in several
   GenImage ``nature`` folders) always land on the same side of every cut, so no photo is both trained
   on and validated on.
3. Where the images come from, by the subsets found on disk:

   - GenImage layout (subsets ``train`` and ``val``): train and validation from ``train/`` (the first
     20% of the order is validation, the rest train), test from ``val/``, GenImage's held-out folder;
   - ``train``/``val``/``test`` folders (``--dataset folder``): each from its own folder (validation is
     held out of ``train/`` when there is no ``val/``);
   - no such folders (subset ``all``): the first 60% train, the next 20% validation, the last 20% test;
     for an unknown class, 20% validation and 80% test (its train share would go unused).

   Case variants and long forms (``Train``, ``validation``, ``testing``) count as train/val/test; they
   and any other subset name are reported in the notes with what was done with them.

4. Caps keep the first ``train_per_class`` / ``val_per_class`` / ``test_per_class`` images of each part
   in that order (defaults 4000 as in the paper's code, 1000, 4000); a larger cap only adds images.
5. Unknown classes get validation rows (the ``paper`` protocol selects hyperparameters on them) and
   test rows. A class left with no image in a part it needs is an error that names it.

So ``attrib features --max-per-source 5000`` (5000 images per source and subset, at most 90k images for
GenImage instead of 2.7M) holds everything the defaults use: 4000 train + 1000 validation from
``train/`` and 4000 test from ``val/``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attrib.data.catalog import SEEDED_KEY_SIZE, ImageList, seeded_key, subset_role
from attrib.data.filenames import path_bytes
from attrib.data.splits import Split, SplitError, SplitRows, check_split

DEFAULT_TRAIN_PER_CLASS = 4000
DEFAULT_VAL_PER_CLASS = 1000
DEFAULT_TEST_PER_CLASS = 4000
VAL_FRACTION = 0.2
ALL_FRACTIONS = (0.6, 0.2)  # train, validation shares of a class found in no train/val/test folder


def _usable(images: ImageList, ok: np.ndarray) -> dict[str, int]:
    out: dict[str, int] = {}
    for s, good in zip(images.sources, np.asarray(ok, bool)):
        if good:
            out[s] = out.get(s, 0) + 1
    return out


def _key(seed: int, path: str) -> bytes:
    """The file name's seeded key (so copies of one photo sort together), then the path to break ties."""
    return seeded_key(seed, path.rsplit("/", 1)[-1]) + path_bytes(path)


def _cut(order: list[int], keys: list[bytes], at: int) -> int:
    """Move a cut forward until it does not separate two images with the same file name."""
    while 0 < at < len(order) and keys[at][:SEEDED_KEY_SIZE] == keys[at - 1][:SEEDED_KEY_SIZE]:
        at += 1
    return at


def _shuffled(rows: list[int], images: ImageList, seed: int) -> tuple[list[int], list[bytes]]:
    pairs = sorted((_key(seed, images.paths[r]), r) for r in rows)
    return [r for _, r in pairs], [k for k, _ in pairs]


def _parts(rows_by_subset: dict[str, list[int]], images: ImageList, seed: int,
           unknown: bool) -> tuple[list[int], list[int], list[int], list[str]]:
    """(train, validation, test) rows of one class before caps, and notes; see the module docstring.

    Subsets are read by :func:`attrib.data.catalog.subset_role` (``Train``, ``validation``, ``testing``
    count as train/val/test, with a note). Any other name is noted with what was done with it (unused
    beside train/val/test, else pooled into the 60/20/20 cut), so a misspelt test folder never becomes
    training data in silence.
    """
    notes = []
    by_role: dict[str, list[int]] = {}
    other = []
    for name in sorted(rows_by_subset):
        role = subset_role(name)
        if role is None:
            other.append(name)
        else:
            by_role.setdefault(role, []).extend(rows_by_subset[name])
            if role != name:
                notes.append(f"subset {name!r} read as {role}")
    if by_role:
        if other:
            notes.append(f"subsets {', '.join(other)} unused (the class has train/val/test folders)")
        pool, pkeys = _shuffled(by_role.get("train", []), images, seed)
        if "test" in by_role:
            test = _shuffled(by_role["test"], images, seed)[0]
            if "val" in by_role:
                return pool, _shuffled(by_role["val"], images, seed)[0], test, notes
        else:
            test = _shuffled(by_role.get("val", []), images, seed)[0]
        n_val = _cut(pool, pkeys, int(len(pool) * VAL_FRACTION))
        return pool[n_val:], pool[:n_val], test, notes
    named = [s for s in other if s != "all"]
    if named:
        share = "20% validation, 80% test" if unknown else \
            f"{ALL_FRACTIONS[0]:.0%} train, {ALL_FRACTIONS[1]:.0%} validation, the rest test"
        notes.append(f"subset(s) {', '.join(repr(s) for s in named)} are not train/val/test: pooled"
                     f"{' with ' + repr('all') if 'all' in other else ''} and cut {share}")
    allrows, keys = _shuffled([r for rs in rows_by_subset.values() for r in rs], images, seed)
    n = len(allrows)
    if unknown:
        a = 0
        b = _cut(allrows, keys, int(n * VAL_FRACTION))
    else:
        a = _cut(allrows, keys, int(n * ALL_FRACTIONS[0]))
        b = max(a, _cut(allrows, keys, int(n * sum(ALL_FRACTIONS))))
    return allrows[:a], allrows[a:b], allrows[b:], notes


def _cap(rows: list, cap: int | None) -> list:
    return rows if cap is None else rows[:cap]


def split_rows(images: ImageList, ok: np.ndarray, split: Split, seed: int = 0,
               train_per_class: int | None = DEFAULT_TRAIN_PER_CLASS,
               val_per_class: int | None = DEFAULT_VAL_PER_CLASS,
               test_per_class: int | None = DEFAULT_TEST_PER_CLASS) -> SplitRows:
    """Build the rows of ``split`` by the sampling protocol of the module docstring (None = no cap)."""
    ok = np.asarray(ok, bool)
    check_split(split, _usable(images, ok))
    wanted = set(split.classes) | set(split.unknown)
    by_src: dict[str, dict[str, list[int]]] = {}
    n_failed = 0
    for i, (s, sub) in enumerate(zip(images.sources, images.subsets)):
        if s in wanted:
            if ok[i]:
                by_src.setdefault(s, {}).setdefault(sub, []).append(i)
            else:
                n_failed += 1
    notes = []
    if n_failed:
        notes.append(f"{n_failed} images of this split failed to decode at extraction and are excluded")

    def parts(src: str, unknown: bool) -> tuple[list[int], list[int], list[int]]:
        subs = by_src[src]
        tr, va, te, why = _parts(subs, images, seed, unknown)
        notes.extend(f"{src}: {w}" for w in why)
        got = {"train": _cap(tr, train_per_class), "validation": _cap(va, val_per_class),
               "test": _cap(te, test_per_class)}
        need = ("validation", "test") if unknown else ("train", "validation", "test")
        for part in need:
            if not got[part]:
                found = ", ".join(f"{k} {len(v)}" for k, v in sorted(subs.items()))
                raise SplitError(
                    f"{split.where}: {'unknown' if unknown else 'known'} class {src!r} has no {part} images "
                    f"(usable images by subset: {found}). Validation is {int(VAL_FRACTION * 100)}% of train/ "
                    f"(test comes from val/); add images or extract more with a larger --max-per-source")
        return got["train"], got["validation"], got["test"]

    tr, ytr, va, yva, te, yte = [], [], [], [], [], []
    for label, src in enumerate(split.classes):
        a, b, c = parts(src, unknown=False)
        tr += a
        ytr += [label] * len(a)
        va += b
        yva += [label] * len(b)
        te += c
        yte += [label] * len(c)
    vu, vus, tu, tus = [], [], [], []
    for src in split.unknown:
        _, b, c = parts(src, unknown=True)
        vu += b
        vus += [src] * len(b)
        tu += c
        tus += [src] * len(c)
    return SplitRows.from_lists(split, tr, ytr, va, yva, te, yte, vu, vus, tu, tus, notes)


class SampledSplits:
    """Splits whose rows are drawn from an image list by seed, with per-class caps (see :func:`split_rows`).

    Every split is checked when the source is made (sources present, no overlap), so a bad split fails
    before a study starts, not halfway through it.
    """

    def __init__(self, images: ImageList, ok: np.ndarray, splits: dict[str, Split],
                 train_per_class: int | None = DEFAULT_TRAIN_PER_CLASS,
                 val_per_class: int | None = DEFAULT_VAL_PER_CLASS,
                 test_per_class: int | None = DEFAULT_TEST_PER_CLASS):
        self.images, self.ok, self._splits = images, np.asarray(ok, bool), dict(splits)
        if not self._splits:
            raise SplitError("no splits to run")
        self.caps = dict(train_per_class=train_per_class, val_per_class=val_per_class,
                         test_per_class=test_per_class)
        usable = _usable(images, self.ok)
        for sp in self._splits.values():
            check_split(sp, usable)
        self._cache: dict[tuple[str, int], SplitRows] = {}

    def names(self) -> list[str]:
        return list(self._splits)

    def split(self, name: str) -> Split:
        return self._splits[name]

    def rows(self, name: str, seed: int) -> SplitRows:
        if (name, seed) not in self._cache:
            self._cache[(name, seed)] = split_rows(self.images, self.ok, self._splits[name], seed=seed, **self.caps)
        return self._cache[(name, seed)]

    def describe(self, name: str) -> dict[str, Any]:
        sp = self._splits[name]
        return {"kind": "sampled", "origin": sp.origin, "known": list(sp.known), "unknown": list(sp.unknown),
                **({"groups": {g: list(m) for g, m in sp.groups}} if sp.groups else {}), **self.caps}

    def notes(self) -> list[str]:
        """The notes of each split's rows (failed images, how subsets were read), from seed 0: none of them
        depends on the seed, and the study draws those rows anyway (they are cached)."""
        return [f"split {name}: {note}" for name in self._splits for note in self.rows(name, 0).notes]


__all__ = ["SampledSplits", "split_rows", "DEFAULT_TRAIN_PER_CLASS", "DEFAULT_VAL_PER_CLASS", "DEFAULT_TEST_PER_CLASS"]
