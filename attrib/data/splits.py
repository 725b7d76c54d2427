"""Open-set splits: what a split is, which splits exist, and the interface studies read them through.

A split names its known sources (class 0 is always ``real``, then the known generators in the split's
order) and its unknown sources (generators never seen in training). Studies get splits from a
:class:`SplitSource`; two kinds exist:

- :class:`attrib.data.sampling.SampledSplits` (built-in splits, or a YAML/JSON ``--split-file`` read by
  :mod:`attrib.data.splitfile`): rows drawn from the feature set's image list by seed, with the
  sampling protocol of :mod:`attrib.data.sampling`;
- :class:`attrib.data.pose.PoseSplits` (``--splits-dir``): the paper's own split files, read as they
  are; the rows are fixed and the seed does not change them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from attrib.data.catalog import REAL
from attrib.errors import AttribError


class SplitError(AttribError, ValueError):
    """A split cannot be built from this image list; the message names the file, line, source or class."""


@dataclass(frozen=True)
class Split:
    """A split's classes. ``groups`` names groups of its unknown generators (the paper's OSMA splits:
    ``seed``, ``arch``, ``dataset``), as (group, members) pairs so the split stays hashable; empty when
    the unknowns are one group. ``all`` (every unknown generator) is implicit and never stored."""

    name: str
    known: tuple[str, ...]
    unknown: tuple[str, ...]
    origin: str = ""  # where it was defined ("built-in", "splits.yaml:4"), for error messages
    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def classes(self) -> tuple[str, ...]:
        return (REAL,) + tuple(self.known)

    @property
    def unknown_groups(self) -> dict[str, tuple[str, ...]]:
        """The named groups of unknown generators, by group name (empty: one group)."""
        return dict(self.groups)

    @property
    def where(self) -> str:
        return f"split {self.name}" + (f" ({self.origin})" if self.origin else "")


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

    @classmethod
    def from_lists(cls, split: Split, train: list[int], y_train: list[int], val: list[int], y_val: list[int],
                   test: list[int], y_test: list[int], val_unknown: list[int], val_unknown_source: list[str],
                   test_unknown: list[int], test_unknown_source: list[str], notes: list[str]) -> "SplitRows":
        """Rows built as Python lists (both split sources do): rows and labels become int64 arrays, the
        unknown rows' source names object arrays, so every source hands studies the same dtypes."""
        def ints(x: list[int]) -> np.ndarray:
            return np.asarray(x, dtype=np.int64)

        def names(x: list[str]) -> np.ndarray:
            return np.asarray(x, dtype=object)

        return cls(split, ints(train), ints(y_train), ints(val), ints(y_val), ints(test), ints(y_test),
                   ints(val_unknown), names(val_unknown_source), ints(test_unknown), names(test_unknown_source),
                   notes)

    def unknown_groups(self) -> dict[str, list[str]] | None:
        """The split's unknown groups restricted to the generators that have test rows (the metrics of a
        group are over its test images; a generator without any is already reported in the notes), groups
        left empty dropped; None when the split has no groups (result lines then carry no ``groups``)."""
        if not self.split.groups:
            return None
        present = set(self.test_unknown_source.tolist())
        out = {g: [m for m in members if m in present] for g, members in self.split.groups}
        return {g: m for g, m in out.items() if m}

    def sizes(self) -> dict[str, int]:
        return {k: int(len(getattr(self, k))) for k in ("train", "val", "test", "val_unknown", "test_unknown")}


# ------------------------------------------------------------------------------------ interface
class SplitSource(Protocol):
    """Where a study gets its splits: named splits, each giving rows for a seed.

    Sampled splits (built-in, or defined by a YAML/JSON file) draw their rows by seed; fixed splits (the
    paper's POSE files) return the same rows for every seed. Studies only use this interface;
    ``describe(name)`` is a JSON-able record of where the rows come from (worth storing with results),
    ``notes()`` the lines a user should read before trusting the numbers.
    """

    def names(self) -> list[str]: ...

    def split(self, name: str) -> Split: ...

    def rows(self, name: str, seed: int) -> SplitRows: ...

    def describe(self, name: str) -> dict[str, Any]: ...

    def notes(self) -> list[str]: ...


# ------------------------------------------------------------------------------------ definitions
def builtin_splits(dataset_kind: str) -> dict[str, Split]:
    """The splits that ship with attrib for ``demo`` and ``genimage`` feature sets."""
    if dataset_kind == "genimage":
        from attrib.data.genimage import SPLITS
        origin = "the paper's GenImage split"
    elif dataset_kind == "demo":
        from attrib.data.demo import SPLITS
        origin = "built-in demo split"
    else:
        return {}
    return {str(k): Split(str(k), known, unknown, origin) for k, (known, unknown) in SPLITS.items()}


def check_split(split: Split, available: dict[str, int] | None = None) -> None:
    """Reject a split that cannot be meant: overlapping or repeated sources, ``real`` as unknown, sources
    with no usable image (``available``: usable images per source)."""
    if not split.known:
        raise SplitError(f"{split.where}: no known generators")
    if not split.unknown:
        raise SplitError(f"{split.where}: no unknown generators (an open-set split needs at least one)")
    for what, names in (("known", split.known), ("unknown", split.unknown)):
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise SplitError(f"{split.where}: {', '.join(dup)} listed twice among the {what} generators")
    overlap = sorted(set(split.known) & set(split.unknown))
    if overlap:
        raise SplitError(f"{split.where}: {', '.join(overlap)} both known and unknown")
    if REAL in split.unknown or REAL in split.known:
        raise SplitError(f"{split.where}: '{REAL}' is always known class 0; do not list it among the generators")
    check_groups(split)
    if available is not None:
        missing = [s for s in split.classes + split.unknown if not available.get(s)]
        if missing:
            have = ", ".join(f"{s} ({n})" for s, n in sorted(available.items())) or "none"
            raise SplitError(f"{split.where}: source(s) {', '.join(missing)} have no usable images in this "
                             f"feature set; sources present: {have}")


def check_groups(split: Split) -> None:
    """Unknown groups must be named, non-empty, made of the split's unknown generators, and not called
    ``all`` (the group of every unknown generator, always reported)."""
    seen = set()
    for group, members in split.groups:
        if not group or group == "all":
            raise SplitError(f"{split.where}: unknown group {group!r}: 'all' is every unknown generator and is "
                             "always reported; name the other groups (e.g. seed, arch, dataset)")
        if group in seen:
            raise SplitError(f"{split.where}: unknown group {group!r} defined twice")
        seen.add(group)
        if not members:
            raise SplitError(f"{split.where}: unknown group {group!r} names no generator")
        stray = [m for m in members if m not in split.unknown]
        if stray:
            raise SplitError(f"{split.where}: unknown group {group!r} names {', '.join(stray)}, which "
                             f"{'is' if len(stray) == 1 else 'are'} not among the split's unknown generators")


def select_splits(available: dict[str, Split], spec: str | None) -> dict[str, Split]:
    """``--splits``: ``all``, names, numbers and ranges (``1-3,5``); a number N also finds ``splitN``."""
    if not available:
        raise SplitError("no splits available")
    if spec is None or spec.strip() == "all":
        return dict(available)
    wanted: list[str] = []
    for tok in (t.strip() for t in spec.split(",")):
        m = re.fullmatch(r"(\d+)-(\d+)", tok)
        wanted.extend(str(i) for i in range(int(m.group(1)), int(m.group(2)) + 1)) if m else wanted.append(tok)
    out = {}
    missing = []
    for w in wanted:
        name = w if w in available else f"split{w}" if f"split{w}" in available else None
        if name is None:
            missing.append(w)
        else:
            out[name] = available[name]
    if missing:
        raise SplitError(f"--splits {spec!r}: no split {', '.join(missing)}; available: {', '.join(available)}")
    return out


__all__ = ["Split", "SplitRows", "SplitError", "SplitSource", "builtin_splits", "check_groups", "check_split",
           "select_splits"]
