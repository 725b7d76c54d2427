"""Growing a feature set: rerunning `attrib features` on a dataset that gained or lost images.

Which feature set a rerun extends. A feature set's folder is named by its image list, so after the dataset
changed the folder for the new list does not exist. The rerun looks for the feature set of the *same
dataset* instead (:data:`attrib.manifest.SAME_DATASET`: same backbone, weights, preprocessing and view, same
root and dataset kind, listed with the same options; never a ``--limit`` trial) that shares images with the
new list (the most, if several do). That set keeps its folder name and its parts; the new images go to a
new part (layout and reading: :mod:`attrib.parts`). A set that never grew keeps today's name and files.

An extension in three steps, each of which survives a kill at any point:

1. *assign* every image of the new list to a part that holds it: the part the newest index uses, else
   the first complete part holding it, else an incomplete one (an earlier extension was killed: it is
   finished, not redone). Images no part holds form the new part, named by the sha256 of its image list,
   so a rerun after a kill, or an identical run started at the same time, writes the very same part,
   shard by shard, exactly as ranks share one feature set.
2. *extract* the incomplete parts (the caller's extraction loop, rank by rank).
3. *publish* the next index generation once every part it names is complete: the last process to finish
   does. Generations are published exclusively; an extension that finds its generation taken (another
   extension finished first) assigns again against the winner and publishes the next one, so every part
   written is used and the union ends up being the list of the extension that finished last.

Images are matched by path: a file replaced under the same name keeps its old features, and a failed
(unreadable) image is not retried; remove it from the cache's parts, or start a new cache, to redo it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from attrib import atomic
from attrib.data.catalog import ImageList
from attrib.manifest import SAME_DATASET, SAME_PART, Manifest
from attrib.parts import (BASE, PARTS, GrownFeatureSet, Index, lookup, new_header, open_grown, part_names,
                          part_path, path_keys, remove_old_indexes)
from attrib.store import IMAGES, FeatureSet, ManifestMismatch, StoreError, list_feature_sets

# Dataset kinds whose image list is the listing of a root that can gain files (`attrib predict`'s
# throwaway lists are not: each predict run stands alone).
GROWABLE_KINDS = ("demo", "genimage", "folder", "list")
PART_NAME_HEX = 12
MAX_PUBLISH_TRIES = 20
NOTE_EXAMPLES = 5
T = TypeVar("T")


@dataclass
class _Part:
    """A part on disk as an extension sees it; ``images`` is None when its list is unreadable (its creator
    was killed before writing it: the rerun that recreates the same part writes it)."""

    name: str
    fs: FeatureSet
    images: ImageList | None
    complete: bool
    _keys: np.ndarray | None = None

    @property
    def keys(self) -> np.ndarray:
        if self._keys is None:
            self._keys = path_keys(self.images.paths if self.images is not None else [])
        return self._keys


@dataclass
class _Union:
    """What readers see now (the newest index, or the first part alone for a set that never grew), its
    rows' holders given as positions in the scanned part list (-1: a part not found) and rows there."""

    generation: int
    images: ImageList
    keys: np.ndarray
    part: np.ndarray
    part_row: np.ndarray


@dataclass
class _Assignment:
    """For each image of a list: the position of the part holding it in the scanned list and its row
    there (-1, -1: no part holds it)."""

    part: np.ndarray
    part_row: np.ndarray

    def missing(self) -> np.ndarray:
        return np.flatnonzero(self.part < 0)


class Extension:
    """One `attrib features` run over a dataset whose feature set (at ``folder``) was made from another list."""

    def __init__(self, folder: Path, images: ImageList, base: FeatureSet | None = None,
                 keys: np.ndarray | None = None):
        """``base``: the folder's first part, opened as an ordinary feature set, and ``keys``: the path keys
        of ``images``, if the caller has them (neither is then read or built again)."""
        self.folder, self.images = Path(folder), images
        self.keys = path_keys(images.paths) if keys is None else keys
        self.base = base if base is not None else FeatureSet.open(folder, whole=False)
        self.notes: list[str] = []
        self.targets: list[tuple[ImageList, Path, bool]] = []
        self._parts: dict[str, _Part] = {}
        self._indexes: dict[Path, tuple[Index, np.ndarray]] = {}

    # -------------------------------------------------------------------------------------- plan
    def _scan(self) -> list[_Part]:
        """Every readable part: the first one, then the others oldest first (ties by name). A part's image
        list never changes once written, so it is read once per extension; completeness is checked anew."""
        found = []
        for name in part_names(self.folder):
            try:
                fs = self.base if name == BASE else FeatureSet.open(part_path(self.folder, name), whole=False)
            except StoreError:  # a damaged manifest: `attrib cache verify` reports it
                continue
            known = self._parts.get(name)
            if known is None or known.images is None or known.fs.manifest.images_sha256 != fs.manifest.images_sha256:
                try:
                    images: ImageList | None = fs.images
                except StoreError:
                    images = None
                known = self._parts[name] = _Part(name, fs, images, False)
            known.complete = fs.complete
            found.append((name != BASE, fs.manifest.created or "", name, known))
        return [p for *_, p in sorted(found, key=lambda t: t[:3])]

    def _current(self, parts: list[_Part]) -> _Union:
        """The union readers see now, its holders given as positions in ``parts``."""
        if not parts or parts[0].name != BASE or parts[0].images is None:
            raise StoreError(f"{self.folder}: its own image list ({IMAGES}) is missing or unreadable, so it cannot "
                             "grow; extract into another --cache or --out folder")
        grown = open_grown(self.folder)
        if grown is None:
            n = len(parts[0].keys)
            return _Union(0, parts[0].images, parts[0].keys, np.zeros(n, dtype=np.int64), np.arange(n))
        cached = self._indexes.get(grown.index_file)  # each generation's file is written once: read it once
        if cached is None:
            index = Index.read(grown.index_file, self.base.manifest.root)
            cached = self._indexes[grown.index_file] = (index, path_keys(index.images.paths))
        index, keys = cached
        where = {p.name: i for i, p in enumerate(parts) if p.images is not None}
        to_scanned = np.array([where.get(ref.name, -1) for ref in index.header.parts], dtype=np.int64)
        return _Union(grown.generation, index.images, keys, to_scanned[index.part], index.part_row)

    def _assign(self, parts: list[_Part], current: _Union) -> _Assignment:
        """Who holds each image of the new list: the part the newest index uses (if complete), else the
        first complete part holding it, else the first incomplete one; vectorised over sorted paths."""
        n = len(self.images)
        chosen = _Assignment(np.full(n, -1, dtype=np.int64), np.full(n, -1, dtype=np.int64))
        u = lookup(current.keys, self.keys)
        rows = np.flatnonzero(u >= 0)
        held, held_row = current.part[u[rows]], current.part_row[u[rows]]
        for i, p in enumerate(parts):
            at = held == i
            if p.images is None or not p.complete or not at.any():
                continue
            mine, r = rows[at], held_row[at]
            good = r < len(p.keys)
            good[good] = p.keys[r[good]] == self.keys[mine[good]]  # trust an index only where it is right
            chosen.part[mine[good]], chosen.part_row[mine[good]] = i, r[good]
        for want_complete in (True, False):
            for i, p in enumerate(parts):
                free = chosen.missing()
                if not free.size:
                    return chosen
                if p.images is None or p.complete != want_complete:
                    continue
                r = lookup(p.keys, self.keys[free])
                hit = r >= 0
                chosen.part[free[hit]], chosen.part_row[free[hit]] = i, r[hit]
        return chosen

    def check(self, manifest: Manifest) -> None:
        """Refuse (naming each field) to add a part made with other settings than the feature set's."""
        diffs = self.base.manifest.mismatches(manifest, SAME_PART)
        if diffs:
            raise ManifestMismatch(
                f"{self.folder} was extracted with different settings:\n  - " + "\n  - ".join(diffs) +
                "\nIts dataset grew since: the new images become a part of it, extracted with its settings. Rerun "
                "with the cached settings, or use another --cache/--out folder.")

    def plan(self) -> list[tuple[ImageList, Path, bool]]:
        """(images, folder, is new) of each part to extract: interrupted parts, then the new images' part."""
        parts = self._scan()
        chosen = self._assign(parts, self._current(parts))
        used = np.unique(chosen.part[chosen.part >= 0])
        todo = [parts[i] for i in used.tolist() if not parts[i].complete]
        targets = [(p.images, p.fs.path, False) for p in todo]
        if todo:
            self.notes.append("finishing interrupted part(s) " + ", ".join(_label(p.name) for p in todo))
        added = chosen.missing()
        if added.size:
            new = self.images.take(added.tolist())
            name = new.sha256()[:PART_NAME_HEX]
            targets.append((new, part_path(self.folder, name), True))
            self.notes.append(f"{added.size} of {_images(len(self.images))} are new since {self.folder.name} was "
                              f"extracted: only they are extracted, into its part {_label(name)}")
        return targets  # type: ignore[return-value]

    # ------------------------------------------------------------------------------------- run
    def run(self, extract_part: Callable[[ImageList, Path, bool], T]) -> list[T]:
        """Extract every part :meth:`plan` names with ``extract_part(images, folder, is_new)``, then
        publish the union if all parts are complete (else other ranks still work: the last one publishes)."""
        if self.up_to_date():
            return []
        if (self.folder / PARTS).is_dir():
            atomic.remove_stale(self.folder / PARTS)  # index files of this host's killed writers
        self.targets = self.plan()
        results = [extract_part(images, path, new) for images, path, new in self.targets]
        self.publish()
        return results

    def up_to_date(self) -> bool:
        """Whether readers already see exactly this list, complete (a rerun with nothing new): told by the
        newest index's header, without reading any image list."""
        grown = open_grown(self.folder)
        return grown is not None and grown.manifest.images_sha256 == self.images.sha256() and grown.complete

    def publish(self) -> bool:
        """Publish the union of this run's list as the next index generation; False while a part it needs
        is incomplete. True also when the newest index already is that union."""
        for _ in range(MAX_PUBLISH_TRIES):
            parts = self._scan()
            current = self._current(parts)
            chosen = self._assign(parts, current)
            if chosen.missing().size or not all(parts[i].complete for i in np.unique(chosen.part).tolist()):
                return False
            if current.images.sha256() == self.images.sha256() and np.array_equal(current.part, chosen.part) \
                    and np.array_equal(current.part_row, chosen.part_row):
                return True
            used = np.unique(chosen.part)  # in scan order: the first part first
            header = new_header(current.generation + 1, self.images, [parts[i].fs for i in used.tolist()],
                                [parts[i].name for i in used.tolist()])
            if Index.write(self.folder, header, self.images, np.searchsorted(used, chosen.part), chosen.part_row):
                self._note_changes(current, header.generation, used.size)
                remove_old_indexes(self.folder, header.generation)
                return True
            # another extension published this generation first: assign again against it
        raise StoreError(f"{self.folder}: could not publish its index after {MAX_PUBLISH_TRIES} tries (other "
                         "extensions kept publishing first); rerun `attrib features`")

    def _note_changes(self, current: _Union, generation: int, n_parts: int) -> None:
        here = lookup(self.keys, current.keys)
        gone = [current.images.paths[i] for i in np.flatnonzero(here < 0).tolist()]
        if gone:
            self.notes.append(f"{_images(len(gone))} no longer in the dataset: left the union (their "
                              f"features stay in their part, unused): {_examples(gone)}")
        kept = np.flatnonzero(here >= 0)
        old, new = current.images, self.images
        moved = [old.paths[u] for u, r in zip(kept.tolist(), here[kept].tolist())
                 if (old.sources[u], old.subsets[u]) != (new.sources[r], new.subsets[r])]
        if moved:
            self.notes.append(f"{_images(len(moved))} changed source or subset; their features are reused: "
                              f"{_examples(moved)}")
        self.notes.append(f"{self.folder.name} now reads as {len(self.images)} images from {n_parts} part(s) "
                          f"(index generation {generation})")

    def shards_left(self) -> int:
        """Shards still missing in the parts this run extracts (other ranks', or a rerun's, to do)."""
        return sum(len(FeatureSet.open(path, whole=False).shards_todo()) for _, path, _ in self.targets)


def _images(n: int) -> str:
    return f"{n} image" if n == 1 else f"{n} images"


def _label(name: str) -> str:
    return "'.' (the first)" if name == BASE else f"{PARTS}/{name}"


def _examples(paths: list[str]) -> str:
    return ", ".join(paths[:NOTE_EXAMPLES]) + (" ..." if len(paths) > NOTE_EXAMPLES else "")


def plan_extension(manifest: Manifest, images: ImageList, cache: str | os.PathLike,
                   out: str | os.PathLike | None = None) -> Extension | None:
    """The extension of an existing feature set that rerunning `attrib features` with ``manifest`` (the new
    list's) means, or None when it means an ordinary run (a new set, or the resume of this very list).

    With ``out``, only the feature set there is considered; else the folder named by the new list, and
    failing that the feature sets of the same dataset under ``cache``.
    """
    if manifest.kind not in GROWABLE_KINDS or manifest.limit is not None or manifest.rows_for is not None \
            or not len(images):
        return None  # a --limit trial or a study's evaluation rows (--rows-for) is a chosen list, not a dataset
    path = Path(out) if out else Path(cache) / manifest.folder_name
    if FeatureSet.exists(path):
        try:
            fs = FeatureSet.open(path)
        except StoreError:  # the ordinary run reports what is wrong with it
            return None
        if fs.manifest.mismatches(manifest, SAME_DATASET):
            return None  # another dataset: the ordinary run refuses it, naming the fields
        if isinstance(fs, GrownFeatureSet) or fs.manifest.images_sha256 != manifest.images_sha256:
            return Extension(path, images, fs.base if isinstance(fs, GrownFeatureSet) else fs)
        return None  # this very list, never grown: an ordinary run (or resume)
    if out:
        return None
    return _find_base(Path(cache), manifest, images)


def _find_base(cache: Path, manifest: Manifest, images: ImageList) -> Extension | None:
    """The feature set of the same dataset sharing the most images with ``images`` (ties: by name)."""
    best: tuple[int, str] | None = None
    best_fs = None
    keys = path_keys(images.paths)
    for fs in list_feature_sets(cache):
        if fs.manifest.mismatches(manifest, SAME_DATASET):
            continue
        base = fs.base if isinstance(fs, GrownFeatureSet) else fs
        if fs.manifest.images_sha256 == manifest.images_sha256:  # holds this very list (a grown set, rerun)
            return Extension(fs.path, images, base, keys)
        try:
            shared = int((lookup(path_keys(fs.images.paths), keys) >= 0).sum())
        except StoreError:
            continue
        key = (-shared, fs.id)
        if shared and (best is None or key < best):
            best, best_fs = key, base
    return Extension(best_fs.path, images, best_fs, keys) if best_fs is not None else None
