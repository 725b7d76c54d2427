"""The image list: which images exist, where they came from, and which subset they were found in.

Every dataset reader (GenImage, the demo, a folder tree, a list file) ends in one :class:`ImageList`,
and the cache stores it verbatim as ``images.tsv``. Rows are sorted by path so the same files always give
the same list (and the same sha256), whatever order the file system lists them in.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from attrib.data.images import is_image_name

REAL = "real"
TSV_HEADER = ("row", "path", "source", "subset")


class CatalogError(ValueError):
    """A dataset description is malformed; the message names the file (and line) to fix."""


def _check_field(value: str, what: str, where: str) -> None:
    if not value:
        raise CatalogError(f"{where}: empty {what}")
    if "\t" in value or "\n" in value or "\r" in value:
        raise CatalogError(f"{where}: {what} {value!r} contains a tab or newline, which the TSV format cannot hold")


@dataclass
class ImageList:
    """Rows of (path, source, subset); ``path`` is relative to ``root`` and uses forward slashes."""

    paths: list[str]
    sources: list[str]
    subsets: list[str]
    root: str = ""
    _index: dict[str, int] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (len(self.paths) == len(self.sources) == len(self.subsets)):
            raise CatalogError("paths, sources and subsets must have the same length")

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, str, str]], root: str | os.PathLike = "",
                  where: str = "image list") -> "ImageList":
        """Build a sorted, duplicate-free list; a duplicate path is an error that names it."""
        rows = sorted(rows)
        for i in range(1, len(rows)):
            if rows[i][0] == rows[i - 1][0]:
                raise CatalogError(f"{where}: duplicate path {rows[i][0]!r}")
        for path, source, subset in rows:
            _check_field(path, "path", where)
            _check_field(source, "source", where)
            _check_field(subset, "subset", where)
        return cls([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], str(root))

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[tuple[str, str, str]]:
        return zip(self.paths, self.sources, self.subsets)

    def abspath(self, row: int) -> str:
        return os.path.join(self.root, self.paths[row]) if self.root else self.paths[row]

    def index(self, path: str) -> int | None:
        """Row of ``path`` (relative to root), or None; built lazily because 2.7M paths take a while."""
        if self._index is None:
            self._index = {p: i for i, p in enumerate(self.paths)}
        return self._index.get(path)

    @property
    def source_array(self) -> np.ndarray:
        return np.asarray(self.sources, dtype=object)

    @property
    def subset_array(self) -> np.ndarray:
        return np.asarray(self.subsets, dtype=object)

    def counts(self) -> dict[tuple[str, str], int]:
        """Number of images per (source, subset)."""
        out: dict[tuple[str, str], int] = {}
        for s, sub in zip(self.sources, self.subsets):
            out[(s, sub)] = out.get((s, sub), 0) + 1
        return dict(sorted(out.items()))

    def take(self, rows: Sequence[int]) -> "ImageList":
        rows = sorted(rows)
        return ImageList([self.paths[i] for i in rows], [self.sources[i] for i in rows],
                         [self.subsets[i] for i in rows], self.root)

    def sha256(self) -> str:
        """Identity of the list: the exact rows, in order (root excluded, so a moved dataset still matches)."""
        h = hashlib.sha256()
        for p, s, sub in self:
            h.update(f"{p}\t{s}\t{sub}\n".encode("utf-8"))
        return h.hexdigest()

    def write_tsv(self, dest: str | os.PathLike | io.TextIOBase) -> None:
        if isinstance(dest, io.TextIOBase):
            self._write_tsv(dest)
        else:
            with open(dest, "w", encoding="utf-8", newline="") as f:
                self._write_tsv(f)

    def _write_tsv(self, f: io.TextIOBase) -> None:
        f.write("\t".join(TSV_HEADER) + "\n")
        for i, (p, s, sub) in enumerate(self):
            f.write(f"{i}\t{p}\t{s}\t{sub}\n")

    @classmethod
    def read_tsv(cls, path: str | os.PathLike, root: str = "") -> "ImageList":
        paths, sources, subsets = [], [], []
        with open(path, encoding="utf-8", newline="") as f:
            header = f.readline().rstrip("\n").split("\t")
            if tuple(header) != TSV_HEADER:
                raise CatalogError(f"{path}:1: expected header {TSV_HEADER}, got {tuple(header)}")
            for lineno, line in enumerate(f, start=2):
                parts = line.rstrip("\n").split("\t")
                if len(parts) != 4 or parts[0] != str(lineno - 2):
                    raise CatalogError(f"{path}:{lineno}: malformed row {line.rstrip()!r}")
                paths.append(parts[1])
                sources.append(parts[2])
                subsets.append(parts[3])
        return cls(paths, sources, subsets, root)


def _relpath(path: str, root: str) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")


def walk_images(top: str | os.PathLike) -> Iterator[str]:
    """Yield every image file under ``top`` (recursively) by name only, with ``os.scandir``.

    Never opens a file, so listing millions of images costs one ``getdents`` per folder. Hidden files
    and folders (macOS ``._*`` resource forks, ``.ipynb_checkpoints``) are skipped.
    """
    stack = [os.fspath(top)]
    while stack:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError as exc:
            raise CatalogError(f"cannot list folder {d}: {exc.strerror or exc}") from None
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.is_dir(follow_symlinks=True):
                stack.append(e.path)
            elif is_image_name(e.name):
                yield e.path


def read_folder(root: str | os.PathLike, progress: bool = False) -> ImageList:
    """``--dataset folder``: each top-level folder of ``root`` is a source (``real`` means real images).

    The subset is the first path component below the source that is ``train``, ``val`` or ``test``,
    else ``all``.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise CatalogError(f"--root {root!r} is not a folder")
    rows = []
    sources = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not sources:
        raise CatalogError(f"{root}: no source folders found (expected <root>/<source>/.../*.png)")
    from tqdm import tqdm
    bar = tqdm(desc="listing images", unit=" files", disable=not progress)
    for source in sources:
        for path in walk_images(os.path.join(root, source)):
            rel = _relpath(path, root)
            parts = rel.split("/")[1:-1]
            subset = next((p for p in parts if p in ("train", "val", "test")), "all")
            rows.append((rel, source, subset))
            bar.update()
    bar.close()
    if not rows:
        raise CatalogError(f"{root}: no image files found under {', '.join(sources)}")
    return ImageList.from_rows(rows, root, where=root)


def read_list(list_file: str | os.PathLike, root: str | os.PathLike | None = None) -> ImageList:
    """``--dataset list``: one ``path<TAB>source[<TAB>subset]`` per line; ``#`` starts a comment.

    Relative paths are relative to ``root`` (default: the list file's folder).
    """
    list_file = os.fspath(list_file)
    if not os.path.isfile(list_file):
        raise CatalogError(f"--list {list_file!r} does not exist")
    root = os.fspath(root) if root else os.path.dirname(os.path.abspath(list_file))
    rows = []
    seen: dict[str, int] = {}
    with open(list_file, encoding="utf-8", newline="") as f:
        for lineno, line in enumerate(csv.reader(f, delimiter="\t"), start=1):
            if not line or not "".join(line).strip() or line[0].startswith("#"):
                continue
            where = f"{list_file}:{lineno}"
            if len(line) not in (2, 3):
                raise CatalogError(f"{where}: expected path<TAB>source[<TAB>subset], got {len(line)} fields: {line!r}")
            path, source = line[0].strip(), line[1].strip()
            subset = line[2].strip() if len(line) == 3 else "all"
            rel = _relpath(path, root) if os.path.isabs(path) else path.replace(os.sep, "/")
            if rel in seen:
                raise CatalogError(f"{where}: duplicate path {rel!r} (first on line {seen[rel]})")
            seen[rel] = lineno
            _check_field(source, "source", where)
            _check_field(subset, "subset", where)
            rows.append((rel, source, subset))
    if not rows:
        raise CatalogError(f"{list_file}: no images listed")
    return ImageList.from_rows(rows, root, where=list_file)


def sample_per_source(images: ImageList, max_per_source: int, seed: int = 0) -> ImageList:
    """At most ``max_per_source`` images per (source, subset), chosen by a seeded, order-free draw.

    Each path gets a pseudo-random key from (seed, path), and the smallest keys win: the choice does not
    depend on listing order, and growing N only adds images.
    """
    if max_per_source <= 0:
        raise CatalogError(f"--max-per-source must be positive, got {max_per_source}")
    groups: dict[tuple[str, str], list[tuple[bytes, int]]] = {}
    for i, (p, s, sub) in enumerate(images):
        key = hashlib.blake2b(f"{seed}\0{p}".encode(), digest_size=8).digest()
        groups.setdefault((s, sub), []).append((key, i))
    keep = []
    for members in groups.values():
        members.sort()
        keep.extend(i for _, i in members[:max_per_source])
    return images.take(keep)


def resolve_root(root: str | os.PathLike) -> str:
    return str(Path(root).expanduser().resolve())
