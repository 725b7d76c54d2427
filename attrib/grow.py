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
from attrib.parts import (BASE, PARTS, GrownFeatureSet, Index, new_header, open_grown, part_names, part_path,
                          remove_old_indexes)
from attrib.store import FeatureSet, ManifestMismatch, StoreError, list_feature_sets

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


@dataclass
class _Union:
    """What readers see now: the newest index, or the first part alone for a set that never grew."""

    generation: int
    images: ImageList
    index: Index | None

    def holder(self, row: int) -> tuple[str, int]:
        if self.index is None:
            return BASE, row
        return self.index.header.parts[int(self.index.part[row])].name, int(self.index.part_row[row])


def _scan(folder: Path) -> list[_Part]:
    """Every readable part: the first one, then the others oldest first (ties by name)."""
    found = []
    for name in part_names(folder):
        try:
            fs = FeatureSet.open(part_path(folder, name), whole=False)
        except StoreError:  # a damaged manifest: `attrib cache verify` reports it
            continue
        try:
            images: ImageList | None = fs.images
        except StoreError:
            images = None
        found.append((name != BASE, fs.manifest.created or "", name, _Part(name, fs, images, fs.complete)))
    return [p for *_, p in sorted(found, key=lambda t: t[:3])]


class Extension:
    """One `attrib features` run over a dataset whose feature set (at ``folder``) was made from another list."""

    def __init__(self, folder: Path, images: ImageList):
        self.folder, self.images = Path(folder), images
        self.base = FeatureSet.open(folder, whole=False)
        self.notes: list[str] = []
        self.targets: list[tuple[ImageList, Path, bool]] = []
        self.published = False

    # -------------------------------------------------------------------------------------- plan
    def _current(self) -> _Union:
        grown = open_grown(self.folder)
        if grown is None:
            return _Union(0, self.base.images, None)
        index = Index.read(grown.index_file, self.base.manifest.root)
        return _Union(grown.generation, index.images, index)

    def _assign(self, parts: list[_Part], current: _Union) -> list[tuple[_Part, int] | None]:
        """For each image of the new list: (part, row there) holding it, or None when no part does."""
        usable = [p for p in parts if p.images is not None]
        by_name = {p.name: p for p in usable}
        chosen: list[tuple[_Part, int] | None] = []
        for path in self.images.paths:
            u = current.images.index(path)
            now = by_name.get(current.holder(u)[0]) if u is not None else None
            pick = None
            for p in ([now] if now is not None else []) + usable:
                r = p.images.index(path)  # type: ignore[union-attr]
                if r is None:
                    continue
                if p.complete:
                    pick = (p, r)
                    break
                pick = pick or (p, r)  # an interrupted part: finished by this run unless a complete one holds it
            chosen.append(pick)
        return chosen

    def check(self, manifest: Manifest) -> None:
        """Refuse (naming each field) to add a part made with other settings than the feature set's."""
        diffs = self.base.manifest.mismatches(manifest, SAME_PART)
        if diffs:
            raise ManifestMismatch(
                f"{self.folder} was extracted with different settings:\n  - " + "\n  - ".join(diffs) +
                f"\nIts dataset grew since: the new images become a part of it, extracted with its settings. Rerun "
                "with the cached settings, or use another --cache/--out folder.")

    def plan(self) -> list[tuple[ImageList, Path, bool]]:
        """(images, folder, is new) of each part to extract: interrupted parts, then the new images' part."""
        parts, current = _scan(self.folder), self._current()
        chosen = self._assign(parts, current)
        todo: dict[str, _Part] = {}
        for c in chosen:
            if c is not None and not c[0].complete:
                todo.setdefault(c[0].name, c[0])
        targets = [(p.images, p.fs.path, False) for p in todo.values()]
        added = [i for i, c in enumerate(chosen) if c is None]
        if todo:
            self.notes.append("finishing interrupted part(s) " + ", ".join(_label(n) for n in todo))
        if added:
            new = self.images.take(added)
            name = new.sha256()[:PART_NAME_HEX]
            targets.append((new, part_path(self.folder, name), True))
            self.notes.append(f"{len(added)} of {len(self.images)} images are new since {self.folder.name} was "
                              f"extracted: only they are extracted, into its part {_label(name)}")
        return targets  # type: ignore[return-value]

    # ------------------------------------------------------------------------------------- run
    def run(self, extract_part: Callable[[ImageList, Path, bool], T]) -> list[T]:
        """Extract every part :meth:`plan` names with ``extract_part(images, folder, is_new)``, then
        publish the union if all parts are complete (else other ranks still work: the last one publishes)."""
        if (self.folder / PARTS).is_dir():
            atomic.remove_stale(self.folder / PARTS)  # index files of this host's killed writers
        self.targets = self.plan()
        results = [extract_part(images, path, new) for images, path, new in self.targets]
        self.published = self.publish()
        return results

    def publish(self) -> bool:
        """Publish the union of this run's list as the next index generation; False while a part it needs
        is incomplete. True also when the newest index already is that union."""
        for _ in range(MAX_PUBLISH_TRIES):
            parts, current = _scan(self.folder), self._current()
            chosen = self._assign(parts, current)
            if any(c is None or not c[0].complete for c in chosen):
                return False
            if self._unchanged(current, chosen):
                return True
            used = [p for p in parts if p.name in {c[0].name for c in chosen}]  # type: ignore[index]
            position = {p.name: i for i, p in enumerate(used)}
            part = np.array([position[c[0].name] for c in chosen], dtype=np.int32)  # type: ignore[index]
            part_row = np.array([c[1] for c in chosen], dtype=np.int64)  # type: ignore[index]
            header = new_header(current.generation + 1, self.images, [p.fs for p in used], [p.name for p in used])
            if Index.write(self.folder, header, self.images, part, part_row):
                self._note_changes(current, header.generation, len(used))
                remove_old_indexes(self.folder, header.generation)
                return True
            # another extension published this generation first: assign again against it
        raise StoreError(f"{self.folder}: could not publish its index after {MAX_PUBLISH_TRIES} tries (other "
                         "extensions kept publishing first); rerun `attrib features`")

    def _unchanged(self, current: _Union, chosen: list) -> bool:
        if current.images.sha256() != self.images.sha256():
            return False
        return all(current.holder(u) == (c[0].name, c[1]) for u, c in enumerate(chosen))

    def _note_changes(self, current: _Union, generation: int, n_parts: int) -> None:
        gone = [p for p in current.images.paths if self.images.index(p) is None]
        if gone:
            self.notes.append(f"{len(gone)} images are no longer in the dataset and left the union (their "
                              f"features stay in their part, unused): {_examples(gone)}")
        moved = [p for p, s, sub in self.images if (u := current.images.index(p)) is not None
                 and (current.images.sources[u], current.images.subsets[u]) != (s, sub)]
        if moved:
            self.notes.append(f"{len(moved)} images changed source or subset; their features are reused: "
                              f"{_examples(moved)}")
        self.notes.append(f"{self.folder.name} now reads as {len(self.images)} images from {n_parts} part(s) "
                          f"(index generation {generation})")

    def shards_left(self) -> int:
        """Shards still missing in the parts this run extracts (other ranks', or a rerun's, to do)."""
        return sum(len(FeatureSet.open(path, whole=False).shards_todo()) for _, path, _ in self.targets)


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
    if manifest.kind not in GROWABLE_KINDS or manifest.limit is not None or not len(images):
        return None
    path = Path(out) if out else Path(cache) / manifest.folder_name
    if FeatureSet.exists(path):
        try:
            fs = FeatureSet.open(path)
        except StoreError:  # the ordinary run reports what is wrong with it
            return None
        if fs.manifest.mismatches(manifest, SAME_DATASET):
            return None  # another dataset: the ordinary run refuses it, naming the fields
        if isinstance(fs, GrownFeatureSet) or fs.manifest.images_sha256 != manifest.images_sha256:
            return Extension(path, images)
        return None  # this very list, never grown: an ordinary run (or resume)
    if out:
        return None
    return _find_base(Path(cache), manifest, images)


def _find_base(cache: Path, manifest: Manifest, images: ImageList) -> Extension | None:
    """The feature set of the same dataset sharing the most images with ``images`` (ties: by name)."""
    best: tuple[int, str] | None = None
    best_fs = None
    for fs in list_feature_sets(cache):
        if fs.manifest.mismatches(manifest, SAME_DATASET):
            continue
        try:
            shared = sum(1 for p in fs.images.paths if images.index(p) is not None)
        except StoreError:
            continue
        key = (-shared, fs.id)
        if shared and (best is None or key < best):
            best, best_fs = key, fs
    return Extension(best_fs.path, images) if best_fs is not None else None
