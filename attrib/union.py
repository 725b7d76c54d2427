"""Several feature sets read as one image list (``attrib probe --features A --features B ...``).

Why: a study may need images that were extracted apart: a dataset extracted in pieces, known generators
from one dataset and unknown ones from another (cross-dataset generalisation). The parts must hold the
same features (same model, weights, preprocessing and view: :data:`attrib.manifest.SAME_FEATURES`);
then a :class:`FeatureUnion` reads them through :class:`attrib.store.FeatureSet`'s read API (``images``,
``n_blocks``, ``width``, ``block``, ``embed``, ``status``, ``rows``, ``id``, ``label``, ``manifest``), so
studies, their feature cache and ``--save-head`` use it as they use one feature set. No feature is copied.

Naming rules (docs/probing.md, "Several feature sets"):

- Parts of one dataset (the same manifest ``dataset``): paths and sources are the parts' own. The union's
  list is sorted by path like any image list, so two parts holding the images of one feature set give
  exactly that feature set's list (the same rows, so the same study). A path in two parts is an error
  naming both.
- Parts of several datasets: every path is ``<dataset>/<path>`` (two datasets may both have
  ``real/0001.png``). A source name that only one dataset has keeps its name; one that several have is
  ``<dataset>/<source>`` in each (different classes). Split definitions may use either form
  (:meth:`FeatureUnion.images_named`): ``<dataset>/<source>`` names that dataset's source alone, a bare
  name shared by several datasets names all of them as one class, so ``real`` (class 0 of every split)
  is the real images of every dataset.

Each row also has a *key*, ``(dataset, path as extracted)``, whatever the display name: train and
evaluation feature sets are matched by it (:mod:`attrib.probe.evalrows`).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from attrib.data.catalog import REAL, ImageList
from attrib.data.splits import Split, SplitError
from attrib.manifest import SAME_FEATURES, Manifest
from attrib.partread import PartRows
from attrib.store import FeatureSet, StoreError

SEP = "/"  # between a dataset's name and a path or source name of that dataset
SHOW = 20  # how many offending paths an error lists


class UnionError(StoreError):
    """Feature sets that cannot be read as one image list; the message names the feature sets and fields."""


def image_keys(fs: FeatureSet | "FeatureUnion", rows: Sequence[int] | np.ndarray) -> list[tuple[str, str]]:
    """``(dataset, path)`` of ``rows``: what identifies an image across feature sets and unions."""
    if isinstance(fs, FeatureUnion):
        return [fs.key(int(r)) for r in rows]
    dataset, paths = fs.manifest.dataset or "", fs.images.paths
    return [(dataset, paths[int(r)]) for r in rows]


def row_of_key(fs: FeatureSet | "FeatureUnion", key: tuple[str, str]) -> int | None:
    """The row of ``fs`` holding the image ``key`` (see :func:`image_keys`), or None."""
    if isinstance(fs, FeatureUnion):
        return fs.find(key)
    return fs.images.index(key[1]) if key[0] == (fs.manifest.dataset or "") else None


def parts_of(fs: FeatureSet | "FeatureUnion") -> list[FeatureSet]:
    """The feature sets ``fs`` reads: its parts, or itself."""
    return list(fs.parts) if isinstance(fs, FeatureUnion) else [fs]


def split_images(fs: FeatureSet | "FeatureUnion", splits: Iterable[Split]) -> ImageList:
    """The image list split sources read: a union's with the source names ``splits`` use
    (:meth:`FeatureUnion.images_named`), a feature set's own."""
    return fs.images_named(splits) if isinstance(fs, FeatureUnion) else fs.images


def open_features(paths: Iterable[str], option: str = "--features") -> FeatureSet | "FeatureUnion":
    """One feature set for one folder, a :class:`FeatureUnion` for several (the same folder twice counts once)."""
    folders = list(dict.fromkeys(str(p) for p in paths))
    if not folders:
        raise UnionError(f"{option}: give at least one feature-set folder")
    sets = [FeatureSet.open(p) for p in folders]
    return sets[0] if len(sets) == 1 else FeatureUnion(sets, option=option)


class FeatureUnion(PartRows):
    """Several feature sets of the same features, read as one sorted image list (see the module docstring).

    Row ``r`` of the union is row ``local[r]`` of part ``part_of[r]``; reads are grouped by part and each
    part reads its rows as :class:`~attrib.store.FeatureSet` does (per shard, contiguous).
    """

    def __init__(self, parts: Sequence[FeatureSet], option: str = "--features"):
        if not parts:
            raise UnionError(f"{option}: a union needs at least one feature set")
        self.parts = sorted(parts, key=lambda p: p.id)  # the order given does not matter
        ref = self.parts[0]
        for other in self.parts[1:]:
            diffs = ref.manifest.mismatches(other.manifest, SAME_FEATURES, ours=f"{ref.id} has",
                                            theirs=f"{other.id} has")
            if diffs:
                raise UnionError(f"{option}: {ref.id} and {other.id} hold different features, so they cannot be "
                                 "read as one image list:\n  - " + "\n  - ".join(diffs) +
                                 "\nExtract every part with the same --model, --pretrained, --preprocess and --view.")
        self.datasets = [p.manifest.dataset or "" for p in self.parts]
        self.qualified = len(set(self.datasets)) > 1
        self._build_index(option)
        self._images: ImageList | None = None
        self.manifest = self._manifest()

    # ------------------------------------------------------------------------------------ the list
    def _display(self, part: int, path: str) -> str:
        return f"{self.datasets[part]}{SEP}{path}" if self.qualified else path

    def _build_index(self, option: str) -> None:
        """Sort every part's rows by display path into the union's rows; a path in two parts is an error."""
        names, part_of, local = [], [], []
        for k, p in enumerate(self.parts):
            names.extend(self._display(k, path) for path in p.images.paths)
            part_of.append(np.full(p.n_images, k, dtype=np.int32))
            local.append(np.arange(p.n_images, dtype=np.int64))
        order = sorted(range(len(names)), key=names.__getitem__)
        self.part_of = np.concatenate(part_of)[order]
        self.local = np.concatenate(local)[order]
        self.paths = [names[i] for i in order]
        dup = [i for i in range(1, len(self.paths)) if self.paths[i] == self.paths[i - 1]]
        if dup:
            shown = [f"{self.paths[i]} (in {self.parts[self.part_of[i - 1]].id} and {self.parts[self.part_of[i]].id})"
                     for i in dup[:SHOW]]
            more = f"\n  ... and {len(dup) - SHOW} more" if len(dup) > SHOW else ""
            raise UnionError(f"{option}: {len(dup)} image path(s) are in two feature sets; a union holds each image "
                             "once:\n  " + "\n  ".join(shown) + more +
                             "\nLeave one of them out, or extract the parts from disjoint image lists.")
        # the union row of each part's rows, to find an image by its key
        self._union_row = [np.empty(p.n_images, dtype=np.int64) for p in self.parts]
        for k in range(len(self.parts)):
            sel = np.flatnonzero(self.part_of == k)
            self._union_row[k][self.local[sel]] = sel

    def _manifest(self) -> Manifest:
        """What the parts share (the features), with the union's image list: the study's identity hash
        covers every part's images and the shared model, weights, preprocessing and view."""
        ms = [p.manifest for p in self.parts]
        kinds = {m.kind for m in ms}
        labels = list(dict.fromkeys(m.label for m in ms if m.label))
        return ms[0].replace(
            dataset="+".join(sorted(set(self.datasets))), n_images=len(self.paths),
            images_sha256=self.images.sha256(), dataset_kind=kinds.pop() if len(kinds) == 1 else None,
            root=self._root(), label="; ".join(labels), splits_dir=None, max_per_source=None, sample_seed=None,
            limit=None, requested=None, created=None)

    def _root(self) -> str:
        """Where the union's paths start: the parts' root (the first part's if they were extracted from
        copies in several places); none for several datasets, whose paths start with the dataset's name."""
        return "" if self.qualified else self.parts[0].manifest.root

    def images_list(self, names: set[str] | None) -> ImageList:
        """The union's image list with source names resolved against ``names`` (None: the default names)."""
        sources, subsets = [], []
        resolve = self._source_namer(names)
        for part, loc in zip(self.part_of.tolist(), self.local.tolist()):
            imgs = self.parts[part].images
            sources.append(resolve(part, imgs.sources[loc]))
            subsets.append(imgs.subsets[loc])
        return ImageList(list(self.paths), sources, subsets, self._root())

    def _source_namer(self, names: set[str] | None):
        """``name(part, source)``: the source's name in the union (see the module docstring)."""
        if not self.qualified:
            return lambda part, source: source
        held: dict[str, set[str]] = {}
        for k, p in enumerate(self.parts):
            for s in set(p.images.sources):
                held.setdefault(s, set()).add(self.datasets[k])
        names = set(names or ())
        both = sorted(f"{d}{SEP}{s}" for s, ds in held.items() for d in ds
                      if len(ds) > 1 and s in names and f"{d}{SEP}{s}" in names)
        if both:
            raise SplitError(f"the splits name {', '.join(both)} and also the bare name, which takes that source "
                             "from every dataset: use one form (`real`, class 0, always takes every dataset's real "
                             "images)")

        def name(part: int, source: str) -> str:
            q = f"{self.datasets[part]}{SEP}{source}"
            if q in names:
                return q
            return source if source in names or len(held[source]) == 1 else q

        return name

    @property
    def images(self) -> ImageList:
        """The image list, shared source names qualified by dataset (see :meth:`images_named`)."""
        if self._images is None:
            self._images = self.images_list(None)
        return self._images

    def images_named(self, splits: Iterable[Split]) -> ImageList:
        """The image list with the source names the split definitions ``splits`` use: a bare name that
        several datasets share takes all of them (``real`` always does), ``dataset/source`` one of them."""
        names = {REAL}
        for sp in splits:
            names.update(sp.known, sp.unknown)
        return self.images_list(names) if self.qualified else self.images

    # ------------------------------------------------------------------------------------- reading
    @property
    def id(self) -> str:
        return "+".join(p.id for p in self.parts)

    @property
    def label(self) -> str:
        return self.manifest.label

    @property
    def n_images(self) -> int:
        return len(self.paths)

    @property
    def n_blocks(self) -> int:
        return self.parts[0].n_blocks

    @property
    def width(self) -> int:
        return self.parts[0].width

    @property
    def embed_dim(self) -> int:
        return self.parts[0].embed_dim

    @property
    def complete(self) -> bool:
        return all(p.complete for p in self.parts)

    def require_complete(self) -> None:
        for p in self.parts:
            p.require_complete()

    def key(self, row: int) -> tuple[str, str]:
        part = int(self.part_of[row])
        return self.datasets[part], self.parts[part].images.paths[int(self.local[row])]

    def find(self, key: tuple[str, str]) -> int | None:
        dataset, path = key
        for k, p in enumerate(self.parts):
            if self.datasets[k] == dataset:
                r = p.images.index(path)
                if r is not None:
                    return int(self._union_row[k][r])
        return None

    def _row_map(self) -> tuple[list[FeatureSet], np.ndarray, np.ndarray]:
        """Reads (``block``, ``embed``, ``status``: :class:`attrib.partread.PartRows`) follow the sorted list."""
        return self.parts, self.part_of, self.local

    # a union lists and finds paths as one feature set does (``images`` and ``id`` are its own)
    rows = FeatureSet.rows


__all__ = ["FeatureUnion", "UnionError", "open_features", "image_keys", "row_of_key", "parts_of", "split_images"]
