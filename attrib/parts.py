"""A grown feature set: one image list made of parts, each an ordinary feature set, and an index.

When a dataset gains images, rerunning `attrib features` extracts only the new ones, into a new *part*
(:mod:`attrib.grow` decides what goes where); readers see the union. On disk::

    cache/<dataset>__<model>__<weights>-<hash8>/   the feature set: its name and first part never change
      manifest.json  images.tsv  shard-*.h5        part '.': the images of the first extraction
      parts/
        3f2a9c01b7d4/                              a part: an ordinary feature set holding new images
          manifest.json  images.tsv  shard-*.h5    (named by the sha256 of its image list)
        index-000002.tsv                           the union, generation 2: which part holds each path

Why this shape: old features are never copied or rewritten, and every part stays an ordinary feature set,
so any HDF5 tool reads it and ``attrib cache verify`` checks it like any other. The index is one file per
generation, published once and never changed (:data:`attrib.atomic.EXCLUSIVE`): a reader opens the newest
generation and sees one consistent image list, never a half-written one, whatever extension runs or dies
meanwhile. A folder with no index is an ordinary feature set, so sets that never grew read as before.

The index is a TSV any tool reads: a first line ``# attrib-index {json}`` (format, generation, the union's
n_images and images_sha256, and each referenced part's name, n_images and images_sha256), then the header
``row path source subset part part_row`` and one row per image of the union, sorted by path as
``images.tsv`` is (so row order is deterministic). ``source`` and ``subset`` are the union's: a list file
that relabels an image reuses its features. Rows of a part that the index does not name (files that left
the dataset) stay on disk, unused.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from attrib import atomic
from attrib.data.catalog import ImageList
from attrib.partread import PartRows
from attrib.store import IMAGES, MANIFEST, FeatureSet, StoreError
from attrib.data.filenames import escape_path, path_bytes, unescape_path
from attrib.verify import VerifyReport

PARTS = "parts"
BASE = "."  # the part that is the feature-set folder itself
INDEX_PREFIX, INDEX_SUFFIX = "index-", ".tsv"
INDEX_MAGIC = "# attrib-index "
INDEX_HEADER = ("row", "path", "source", "subset", "part", "part_row")
INDEX_FORMAT = 1
TAB = "\t"
KEEP_GENERATIONS = 2  # older index files are removed: a reader opened on one of them has long loaded it


def path_keys(paths: Sequence[str]) -> np.ndarray:
    """Paths as a numpy array of UTF-8 bytes: sorted lists compare and search in C, at one byte a
    character (UTF-8 bytes sort as the code points do, so the order is the image list's)."""
    return np.array([path_bytes(p) for p in paths], dtype=np.bytes_) if len(paths) else np.array([], "S1")


def lookup(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    """Row of each of ``needles`` in ``haystack`` (path keys), -1 where absent. Image lists are sorted by
    path, so this is a binary search; an unsorted one (edited by hand) is sorted first."""
    if not haystack.size or not needles.size:
        return np.full(needles.size, -1, dtype=np.int64)
    order = None if (haystack[1:] > haystack[:-1]).all() else np.argsort(haystack, kind="stable")
    pos = np.minimum(np.searchsorted(haystack, needles, sorter=order), haystack.size - 1)
    rows = pos if order is None else order[pos]
    return np.where(haystack[rows] == needles, rows, -1).astype(np.int64)


def part_path(folder: str | os.PathLike, name: str) -> Path:
    """Folder of the part called ``name`` (:data:`BASE` is the feature-set folder itself)."""
    return Path(folder) if name == BASE else Path(folder) / PARTS / name


def part_names(folder: str | os.PathLike) -> list[str]:
    """Every part on disk, indexed or not: :data:`BASE` first, then the folders under ``parts/`` by name."""
    pdir = Path(folder) / PARTS
    names = sorted(d.name for d in pdir.iterdir() if (d / MANIFEST).is_file()) if pdir.is_dir() else []
    return [BASE, *names]


def index_path(folder: str | os.PathLike, generation: int) -> Path:
    return Path(folder) / PARTS / f"{INDEX_PREFIX}{generation:06d}{INDEX_SUFFIX}"


def index_generations(folder: str | os.PathLike) -> list[int]:
    """Generations of the index files in ``folder``, oldest first (empty: the set never grew)."""
    pdir = Path(folder) / PARTS
    if not pdir.is_dir():
        return []
    out = []
    for p in pdir.iterdir():
        digits = p.name[len(INDEX_PREFIX):-len(INDEX_SUFFIX)]
        if p.name.startswith(INDEX_PREFIX) and p.name.endswith(INDEX_SUFFIX) and digits.isdigit():
            out.append(int(digits))
    return sorted(out)


@dataclass(frozen=True)
class PartRef:
    """A part as an index names it: what it held when the index was written."""

    name: str
    n_images: int
    images_sha256: str


@dataclass(frozen=True)
class IndexHeader:
    """The first line of an index file: enough to open the union without reading its rows."""

    generation: int
    n_images: int
    images_sha256: str
    parts: tuple[PartRef, ...]
    created: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"format": INDEX_FORMAT, "generation": self.generation, "n_images": self.n_images,
                "images_sha256": self.images_sha256, "created": self.created,
                "parts": [{"part": p.name, "n_images": p.n_images, "images_sha256": p.images_sha256}
                          for p in self.parts]}

    @classmethod
    def from_line(cls, line: str, where: Path) -> "IndexHeader":
        try:
            if not line.startswith(INDEX_MAGIC):
                raise ValueError(f"the first line does not start with {INDEX_MAGIC.strip()!r}")
            raw = json.loads(line[len(INDEX_MAGIC):])
            if raw.get("format") != INDEX_FORMAT:
                raise ValueError(f"index format {raw.get('format')!r}, this attrib reads {INDEX_FORMAT}")
            parts = tuple(PartRef(str(p["part"]), int(p["n_images"]), str(p["images_sha256"])) for p in raw["parts"])
            return cls(int(raw["generation"]), int(raw["n_images"]), str(raw["images_sha256"]), parts,
                       str(raw.get("created", "")))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreError(f"{where}: damaged index ({exc}); run `attrib cache verify` on its feature set") from None


@dataclass
class Index:
    """One generation of the union: header, the image list, and for each row its part and row there."""

    path: Path
    header: IndexHeader
    images: ImageList
    part: np.ndarray  # (n,) int32: position of the row's part in header.parts
    part_row: np.ndarray  # (n,) int64: the row in that part

    @classmethod
    def read(cls, path: Path, root: str) -> "Index":
        try:
            with open(path, encoding="utf-8", newline="") as f:
                header = IndexHeader.from_line(f.readline(), path)
                columns = tuple(f.readline().rstrip("\n").split("\t"))
                if columns != INDEX_HEADER:
                    raise StoreError(f"{path}:2: expected columns {INDEX_HEADER}, got {columns}")
                return cls._rows(path, header, f, root)
        except OSError as exc:
            raise StoreError(f"{path}: unreadable index ({exc.strerror or exc}); reopen the feature set (it may "
                             "have grown meanwhile), or run `attrib cache verify` on it") from None

    @classmethod
    def _rows(cls, path: Path, header: IndexHeader, lines: Iterable[str], root: str) -> "Index":
        """The rows, checked column-wise (numbers with numpy), so that millions of rows read in seconds."""
        columns: tuple[list[str], ...] = ([], [], [], [], [], [])
        numbers, paths, sources, subsets, names, part_rows = columns

        def malformed(i: int, line: str) -> StoreError:
            return StoreError(f"{path}:{i + 3}: malformed index row {line.rstrip()!r}; run `attrib cache verify` "
                              "on its feature set")

        for i, line in enumerate(lines):  # one row at a time: no per-row object outlives its line
            cols = line.rstrip("\n").split("\t")
            if len(cols) != len(INDEX_HEADER):
                raise malformed(i, line)
            numbers.append(cols[0])
            paths.append(unescape_path(cols[1]))  # written as images.tsv writes paths
            sources.append(cols[2])
            subsets.append(cols[3])
            names.append(cols[4])
            part_rows.append(cols[5])
        try:
            row_no, part_row = np.array(numbers, dtype=np.int64), np.array(part_rows, dtype=np.int64)
        except ValueError:
            i = next(i for i, (a, b) in enumerate(zip(numbers, part_rows)) if not (a.isdigit() and b.isdigit()))
            raise malformed(i, TAB.join(c[i] for c in columns)) from None
        wrong = np.flatnonzero(row_no != np.arange(len(numbers)))
        if wrong.size:
            raise malformed(int(wrong[0]), TAB.join(c[int(wrong[0])] for c in columns))
        ids = {p.name: i for i, p in enumerate(header.parts)}
        unknown = sorted(set(names) - set(ids))
        if unknown:
            raise StoreError(f"{path}: rows name parts its header does not ({', '.join(unknown)}); run `attrib "
                             "cache verify` on its feature set")
        if len(paths) != header.n_images:
            raise StoreError(f"{path}: {len(paths)} rows, its header says {header.n_images}; the file was cut "
                             "or edited: run `attrib cache verify` on its feature set")
        part = np.array([ids[n] for n in names], dtype=np.int32)
        sizes = np.array([p.n_images for p in header.parts], dtype=np.int64)
        if part_row.size and ((part_row < 0) | (part_row >= sizes[part])).any():
            raise StoreError(f"{path}: a row points outside its part; run `attrib cache verify` on its feature set")
        return cls(path, header, ImageList(paths, sources, subsets, root), part, part_row)

    @staticmethod
    def write(folder: Path, header: IndexHeader, images: ImageList, part: np.ndarray,
              part_row: np.ndarray) -> bool:
        """Publish generation ``header.generation``; False when another process published it first."""
        target = index_path(folder, header.generation)
        target.parent.mkdir(parents=True, exist_ok=True)
        names = [p.name for p in header.parts]
        with atomic.temporary(target) as tmp:
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                f.write(INDEX_MAGIC + json.dumps(header.to_json()) + "\n" + "\t".join(INDEX_HEADER) + "\n")
                for i, (p, s, sub) in enumerate(images):
                    f.write(f"{i}\t{escape_path(p)}\t{s}\t{sub}\t{names[part[i]]}\t{part_row[i]}\n")
            return atomic.publish(tmp, target, atomic.EXCLUSIVE)


def new_header(generation: int, images: ImageList, parts: Sequence[FeatureSet], names: Sequence[str]) -> IndexHeader:
    refs = tuple(PartRef(n, p.n_images, str(p.manifest.images_sha256)) for n, p in zip(names, parts))
    return IndexHeader(generation, len(images), images.sha256(), refs,
                       _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))


def remove_old_indexes(folder: Path, newest: int) -> None:
    for g in index_generations(folder):
        if g <= newest - KEEP_GENERATIONS:
            index_path(folder, g).unlink(missing_ok=True)


def open_grown(path: str | os.PathLike) -> "GrownFeatureSet | None":
    """The union of the parts in ``path`` as its newest index lists it; None when ``path`` never grew."""
    path = Path(path)
    for _ in range(3):  # the newest index may be superseded and removed between listing and reading
        gens = index_generations(path)
        if not gens:
            return None
        ipath = index_path(path, gens[-1])
        try:
            with open(ipath, encoding="utf-8", newline="") as f:
                header = IndexHeader.from_line(f.readline(), ipath)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StoreError(f"{ipath}: unreadable index ({exc.strerror or exc})") from None
        base = FeatureSet.open(path, whole=False)
        manifest = base.manifest.replace(n_images=header.n_images, images_sha256=header.images_sha256)
        return GrownFeatureSet(path, manifest, base, ipath, header)
    raise StoreError(f"{path}: its index keeps changing while it is opened; try again once extensions finish")


@dataclass
class GrownReport(VerifyReport):
    """:class:`~attrib.store.VerifyReport` of a grown set, plus notes that are not errors."""

    notes: list[str] = field(default_factory=list)


class GrownFeatureSet(PartRows, FeatureSet):
    """A feature set that grew: reads (``block``, ``embed``, ``status``, ``rows``, ``images``) see the union.

    Open it with :meth:`attrib.store.FeatureSet.open`. It is read-only: its parts are written by
    :mod:`attrib.grow`. Shard addressing (``shard_path``, ``shard_range``) belongs to the parts.
    """

    def __init__(self, path: str | os.PathLike, manifest, base: FeatureSet, index_file: Path, header: IndexHeader):
        super().__init__(path, manifest)
        self.base, self.index_file, self.header = base, index_file, header
        self._index: Index | None = None
        self._parts: list[FeatureSet] | None = None
        self._live: list[np.ndarray] | None = None

    # ---------------------------------------------------------------------------------- structure
    @property
    def generation(self) -> int:
        return self.header.generation

    @property
    def part_names(self) -> list[str]:
        return [p.name for p in self.header.parts]

    @property
    def parts(self) -> list[FeatureSet]:
        """The parts the index names, in its order, each checked to be the list the index was built on."""
        if self._parts is None:
            parts = []
            for ref in self.header.parts:
                p = self.base if ref.name == BASE else FeatureSet.open(part_path(self.path, ref.name), whole=False)
                if (p.n_images, p.manifest.images_sha256) != (ref.n_images, ref.images_sha256):
                    raise StoreError(f"{p.path}: not the part {self.index_file.name} was built on (its image list "
                                     "changed); run `attrib cache verify` on " + str(self.path))
                parts.append(p)
            self._parts = parts
        return self._parts

    def _load(self) -> Index:
        if self._index is None:
            self._index = Index.read(self.index_file, self.manifest.root)
        return self._index

    @property
    def images(self) -> ImageList:
        return self._load().images

    def _refuse(self, *_: Any, **__: Any):
        raise StoreError(f"{self.path} grew: its shards belong to its parts ({', '.join(self.part_names)}); open a "
                         f"part with FeatureSet.open(path, whole=False) to address them")

    shard_range = shard_path = write_shard = _refuse

    @property
    def n_shards(self) -> int:
        return sum(p.n_shards for p in self.parts)

    def shards_done(self) -> list[tuple[str, int]]:  # type: ignore[override]
        """(part, shard) of every finished shard of the indexed parts."""
        return [(n, k) for n, p in zip(self.part_names, self.parts) for k in p.shards_done()]

    def shards_todo(self, rank: int = 0, world_size: int = 1) -> list[tuple[str, int]]:  # type: ignore[override]
        return [(n, k) for n, p in zip(self.part_names, self.parts) for k in p.shards_todo(rank, world_size)]

    def damaged_shards(self, shards: Iterable[tuple[str, int]] | None = None) -> list[tuple[str, str]]:  # type: ignore[override]
        """(part/shard name, what is wrong) of every visibly damaged shard of the indexed parts (cheap
        checks, as :meth:`FeatureSet.damaged_shards`)."""
        wanted = None if shards is None else set(shards)
        out = []
        for name, p in zip(self.part_names, self.parts):
            ks = None if wanted is None else [k for n, k in wanted if n == name]
            out.extend((f"{name}/{p.shard_path(k).name}", why) for k, why in p.damaged_shards(ks))
        return out

    def shard_damage(self) -> tuple[list[tuple[str, int]], list[tuple[str, int, str]]]:  # type: ignore[override]
        """As :meth:`FeatureSet.shard_damage`, over the indexed parts: (part name, shard) pairs. The
        inherited ``complete`` reads it, so it covers every part."""
        missing, damaged = [], []
        for name, p in zip(self.part_names, self.parts):
            gone, bad = p.shard_damage()
            missing += [(name, k) for k in gone]
            damaged += [(name, k, why) for k, why in bad]
        return missing, damaged

    def require_complete(self) -> None:
        missing, damaged = self.shard_damage()
        if missing:
            name, k = missing[0]
            raise StoreError(f"{self.path} is incomplete: {len(missing)} shards of its parts are missing (first: "
                             f"{part_path(self.path, name) / f'shard-{k:05d}.h5'}). Rerun `attrib features` with "
                             "the same options to finish it.")
        if damaged:  # the first damaged part's shards, named by that part, with the fix
            first = damaged[0][0]
            part = self.parts[self.part_names.index(first)]
            raise part.damaged_error([(k, why) for name, k, why in damaged if name == first])

    # --------------------------------------------------------------------------------------- read
    def _row_map(self) -> tuple[list[FeatureSet], np.ndarray, np.ndarray]:
        """Reads (``block``, ``embed``, ``status``: :class:`attrib.partread.PartRows`) follow the index."""
        index = self._load()
        return self.parts, index.part, index.part_row

    # ------------------------------------------------------------------------------------ inspect
    def union_rows(self) -> list[np.ndarray]:
        """For each indexed part: the union row of each of its rows (-1: not in the union)."""
        if self._live is None:
            index = self._load()
            self._live = []
            for i, ref in enumerate(self.header.parts):
                inverse = np.full(ref.n_images, -1, dtype=np.int64)
                at = np.flatnonzero(index.part == i)
                inverse[index.part_row[at]] = at
                self._live.append(inverse)
        return self._live

    def unindexed_parts(self) -> list[str]:
        """Parts on disk that this generation does not name: an extension running, interrupted, or superseded."""
        named = set(self.part_names)
        return [n for n in part_names(self.path) if n not in named]

    def describe(self) -> list[str]:
        """Lines for `attrib cache info`: the index, each part and what left the union."""
        lines = [f"grown: {len(self.parts)} parts, index {self.index_file.relative_to(self.path)} (generation "
                 f"{self.generation})"]
        for name, p, live in zip(self.part_names, self.parts, self.union_rows()):
            lines.append(f"  part {part_path(Path('.'), name)}  {p.n_images} images ({(live >= 0).sum()} in the "
                         f"union), {len(p.shards_done())}/{p.n_shards} shards, {p.nbytes() / 1e6:.1f} MB")
        return lines + [f"  note: {n}" for n in self.notes()]

    def notes(self) -> list[str]:
        removed = sum(int((live < 0).sum()) for live in self.union_rows())
        out = [f"parts/{n}: in no index (an extension running, or interrupted: rerun `attrib features` to finish "
               "it)" for n in self.unindexed_parts()]
        if removed:
            out.append(f"{removed} image{'s' if removed != 1 else ''} of the parts not in the union (files that "
                       "left the dataset); their features stay in their parts, unused")
        return out

    def nbytes(self) -> int:
        return sum(p.nbytes() for p in self.parts)

    def temp_files(self) -> list[str]:
        found = [f"{PARTS}/{p.name}" for p in atomic.temp_files(self.path / PARTS)]
        for name, p in zip(self.part_names, self.parts):
            prefix = "" if name == BASE else f"{PARTS}/{name}/"
            found.extend(prefix + t for t in p.temp_files())
        return sorted(found)

    # ------------------------------------------------------------------------------------- verify
    def verify(self) -> GrownReport:
        """Check the index against its parts, and every indexed part as `verify` checks any feature set."""
        try:
            rep = GrownReport(self.path, self.n_images, self.n_shards)
            index, live = self._load(), self.union_rows()
        except StoreError as exc:
            rep = GrownReport(self.path, self.n_images, 0)
            rep.broken.append((-1, str(exc)))
            return rep
        rep.broken.extend((-1, problem) for problem in self._index_problems(index))
        for name, p, rows in zip(self.part_names, self.parts, live):
            where = f"part {part_path(Path('.'), name)}"
            prep = p.verify()
            rep.broken.extend((-1, f"{where}: shard {k} ({p.shard_path(k).name}) missing; rerun `attrib features` "
                                   "with the same options") for k in prep.missing)
            rep.broken.extend((-1, f"{where}{f' shard {k}' if k >= 0 else ''}: {why}") for k, why in prep.broken)
            rep.failed.extend((int(rows[r]), path, err) for r, path, err in prep.failed if rows[r] >= 0)
            rep.nonfinite.extend(int(rows[r]) for r in prep.nonfinite if rows[r] >= 0)
            unused = [r for r in prep.nonfinite if rows[r] < 0]
            if unused:
                rep.notes.append(f"{where}: non-finite features in {len(unused)} rows outside the union")
        rep.failed.sort()
        rep.nonfinite.sort()
        rep.leftovers = self.temp_files()
        rep.notes.append(f"grown: {len(self.parts)} parts, index {self.index_file.relative_to(self.path)}")
        rep.notes.extend(self.notes())
        return rep

    def _index_problems(self, index: Index) -> list[str]:
        name = self.index_file.name
        images, problems = index.images, []
        if images.sha256() != self.header.images_sha256:
            problems.append(f"{name}: its rows do not match its header's images_sha256")
        keys = path_keys(images.paths)
        if not (keys[1:] > keys[:-1]).all():
            problems.append(f"{name}: paths are not sorted and unique")
        for i, p in enumerate(self.parts):
            if not (p.path / IMAGES).is_file():
                problems.append(f"{p.path / IMAGES} missing")
                continue
            at = np.flatnonzero(index.part == i)
            wrong = at[path_keys(p.images.paths)[index.part_row[at]] != keys[at]]
            if wrong.size:
                problems.append(f"{name}: {wrong.size} rows name another image than their part holds, e.g. row "
                                f"{wrong[0]} ({images.paths[wrong[0]]})")
        return problems
