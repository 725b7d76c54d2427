"""The image list: which images exist, where they came from, and which subset they were found in.

Every dataset reader (GenImage, the demo, a folder tree, a list file) ends in one :class:`ImageList`,
and the cache stores it verbatim as ``images.tsv``. Rows are sorted by path so the same files always give
the same list (and the same sha256), whatever order the file system lists them in.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from attrib.data.filenames import (LINK_AGAIN, LINK_INSIDE, LINK_LOOP, TAB_IN_FILE, TAB_IN_FOLDER, Skipped, as_label,
                                   escape_path, path_bytes, unescape_path, unlistable)
from attrib.data.images import IMAGE_SUFFIXES, is_image_name
from attrib.errors import AttribError

REAL = "real"
TSV_HEADER = ("row", "path", "source", "subset")


class CatalogError(AttribError, ValueError):
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
    _sha256: str | None = field(default=None, repr=False, compare=False)

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
        """Identity of the list: the exact rows, in order (root excluded, so a moved dataset still matches).

        Computed once: lists are not modified after construction (``take`` and the readers build new ones).
        Paths are hashed as their bytes on disk (:func:`path_bytes`): the UTF-8 of an ordinary name, so
        the hash of a list without odd names is what it always was.
        """
        if self._sha256 is None:
            h = hashlib.sha256()
            for p, s, sub in self:
                h.update(path_bytes(f"{p}\t{s}\t{sub}\n"))
            self._sha256 = h.hexdigest()
        return self._sha256

    def write_tsv(self, dest: str | os.PathLike | io.TextIOBase) -> None:
        if isinstance(dest, io.TextIOBase):
            self._write_tsv(dest)
        else:
            with open(dest, "w", encoding="utf-8", newline="") as f:
                self._write_tsv(f)

    def _write_tsv(self, f: io.TextIOBase) -> None:
        """One line per row; paths in their lossless text form (:func:`escape_path`: a name that is not
        UTF-8 gets ``\\xNN`` escapes, an ordinary one is written as it is)."""
        f.write("\t".join(TSV_HEADER) + "\n")
        for i, (p, s, sub) in enumerate(self):
            f.write(f"{i}\t{escape_path(p)}\t{s}\t{sub}\n")

    @classmethod
    def read_tsv(cls, path: str | os.PathLike, root: str = "", sha256: str | None = None) -> "ImageList":
        """Read what :meth:`write_tsv` wrote (paths unescaped back to the names on disk).

        ``sha256`` (the manifest's ``images_sha256``) settles the one ambiguous case: a list written
        before escapes existed whose names hold ``\\\\`` or ``\\x80``-``\\xff`` literally. When
        unescaping changed a path and only the raw text matches ``sha256``, the raw text is right.
        """
        paths, sources, subsets, raw = [], [], [], []
        with open(path, encoding="utf-8", newline="") as f:
            header = f.readline().rstrip("\n").split("\t")
            if tuple(header) != TSV_HEADER:
                raise CatalogError(f"{path}:1: expected header {TSV_HEADER}, got {tuple(header)}")
            for lineno, line in enumerate(f, start=2):
                parts = line.rstrip("\n").split("\t")
                if len(parts) != 4 or parts[0] != str(lineno - 2):
                    raise CatalogError(f"{path}:{lineno}: malformed row {line.rstrip()!r}")
                paths.append(unescape_path(parts[1]))
                raw.append(parts[1])
                sources.append(parts[2])
                subsets.append(parts[3])
        images = cls(paths, sources, subsets, root)
        if sha256 and any("\\" in p for p in raw) and paths != raw and images.sha256() != sha256:
            as_written = cls(raw, sources, subsets, root)
            if as_written.sha256() == sha256:
                return as_written
        return images


def text_lines(path: str | os.PathLike, error: type[Exception] = CatalogError) -> Iterator[tuple[int, str]]:
    """``(line number, line without its line break)`` of a UTF-8 text file the user wrote (a BOM is dropped).

    Every text input (list files, split files, POSE files) is read here, so a file saved in another
    encoding (Latin-1, UTF-16) is one clear ``error`` naming the file, line and byte instead of a
    ``UnicodeDecodeError`` traceback. Streams (a list file may hold millions of lines): bytes that are not
    UTF-8 are carried through by ``surrogateescape`` and found per line, so the line number is exact.
    Line breaks are ``\n``, ``\r\n`` or ``\r``, as for any file opened with ``newline=""``.
    """
    try:
        with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.isascii():
                    try:
                        line.encode("utf-8")
                    except UnicodeEncodeError as exc:
                        byte = ord(line[exc.start]) - 0xDC00
                        raise error(f"{path}:{lineno}: not UTF-8 text (byte 0x{byte:02x} at column {exc.start + 1}); "
                                    f"save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 FILE > NEW`") from None
                yield lineno, line.rstrip("\r\n")
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None


def _relpath(path: str, root: str) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")


# Folders that hold no images of the dataset: archive tools' metadata (``__MACOSX`` ships inside some
# GenImage zips, with ``._*.png`` resource forks that are not images).
SKIP_DIRS = frozenset({"__MACOSX", "@eaDir", "$RECYCLE.BIN", "System Volume Information"})


def scan_images(top: str | os.PathLike, skipped: Skipped | None = None) -> Iterator[tuple[str, list[str]]]:
    """Yield ``(relative folder, image file names)`` for every folder under ``top`` that holds images.

    Only names are looked at, with ``os.scandir`` (one ``getdents`` per folder, no ``stat`` on file
    systems that report entry types), so listing millions of images takes about a minute. Relative
    folders use forward slashes (``''`` for ``top`` itself); callers build paths by concatenation,
    which is several times faster than ``os.path.relpath`` per file. Hidden entries (``.``-prefixed:
    macOS ``._*`` forks, ``.ipynb_checkpoints``) and :data:`SKIP_DIRS` are skipped silently (they are
    never data). Recorded in ``skipped``, for the caller's notes: names with a tab or line break (the
    image list cannot hold them), symlinked folders that loop back to a folder containing them, and
    links to a folder inside ``top`` (listed under its own path) or listed already through another link:
    each of these would list the same images twice, once in training and once in testing. Names that
    are not UTF-8 are kept (see :mod:`attrib.data.filenames`).
    """
    top = os.fspath(top)
    skipped = skipped if skipped is not None else Skipped()
    top_real = os.path.realpath(top)
    stack = [(top, "")]
    seen: set[tuple[int, int]] = set()
    while stack:
        d, rel = stack.pop()
        try:
            it = os.scandir(d)
        except OSError as exc:
            raise CatalogError(f"cannot list folder {d}: {exc.strerror or exc}") from None
        names = []
        with it:
            for e in it:
                name = e.name
                if name[0] == "." or name in SKIP_DIRS:
                    continue
                try:
                    is_dir = e.is_dir(follow_symlinks=True)
                except OSError:
                    continue  # a dangling link
                if is_dir:
                    path = f"{rel}/{name}" if rel else name
                    if unlistable(name):
                        skipped.add(TAB_IN_FOLDER, os.path.join(top, path))
                    elif not e.is_symlink() or _follow_link(e, top_real, seen, skipped):
                        stack.append((e.path, path))
                elif name[name.rfind("."):].lower() in IMAGE_SUFFIXES:  # is_image_name, inlined: hot loop
                    if unlistable(name):
                        skipped.add(TAB_IN_FILE, e.path)
                    else:
                        names.append(name)
        if names:
            yield rel, names


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _follow_link(entry: os.DirEntry, top_real: str, seen: set[tuple[int, int]], skipped: Skipped) -> bool:
    """Whether to list the folder a symlink leads to: not when it contains the link (a loop, which would
    list the same images again under ever longer paths), nor when it lies inside the listed tree or
    another link led there already (its images would be listed twice)."""
    try:
        st = entry.stat(follow_symlinks=True)
        target = os.path.realpath(entry.path)
    except OSError:
        return False  # vanished since it was listed
    if _inside(os.path.realpath(os.path.dirname(entry.path)), target):
        skipped.add(LINK_LOOP, f"{entry.path} -> {target}")
        return False
    if _inside(target, top_real):
        skipped.add(LINK_INSIDE, f"{entry.path} -> {target}")
        return False
    if (st.st_dev, st.st_ino) in seen:
        skipped.add(LINK_AGAIN, f"{entry.path} -> {target}")
        return False
    seen.add((st.st_dev, st.st_ino))
    return True


def top_folders(root: str, skipped: Skipped | None = None) -> list[str]:
    """The sub-folders of a dataset ``--root``, sorted, skipping what :func:`scan_images` skips."""
    if not os.path.isdir(root):
        raise CatalogError(f"--root {root!r} is not a folder")
    out = []
    with os.scandir(root) as it:
        for e in it:
            if e.is_dir() and e.name[0] != "." and e.name not in SKIP_DIRS:
                if not unlistable(e.name):
                    out.append(e.name)
                elif skipped is not None:
                    skipped.add(TAB_IN_FOLDER, e.path)
    return sorted(out)


def walk_images(top: str | os.PathLike, skipped: Skipped | None = None) -> Iterator[str]:
    """Every image file under ``top`` (full paths), by name only; see :func:`scan_images`.

    Without ``skipped``, what was skipped is noted on stderr once the walk is done.
    """
    top = os.fspath(top)
    own = skipped is None
    skipped = Skipped() if own else skipped
    for rel, names in scan_images(top, skipped):
        base = os.path.join(top, rel) if rel else top
        for n in names:
            yield os.path.join(base, n)
    if own:
        skipped.print()


def _bar(desc: str, progress: bool):
    from tqdm import tqdm

    return tqdm(desc=desc, unit=" files", disable=not progress, mininterval=0.5, unit_scale=True)


def read_folder(root: str | os.PathLike, progress: bool = False) -> ImageList:
    """``--dataset folder``: each top-level folder of ``root`` is a source (``real`` means real images).

    Images may sit at any depth below their source folder. The subset is the first folder below the
    source named ``train``, ``val`` or ``test`` (``<root>/<source>/train/...``) or a variant of these
    (:func:`subset_role`: ``Train``, ``validation``, ``testing``), kept as spelled on disk; else ``all``.
    See :mod:`attrib.data.sampling` for how each is used (it notes every variant it reads).
    """
    root = os.fspath(root)
    skipped = Skipped()
    sources = top_folders(root, skipped)
    if not sources:
        raise CatalogError(f"{root}: no source folders found (expected <root>/<source>/.../*.png, "
                           f"e.g. <root>/real/a.jpg and <root>/my_generator/b.png)")
    rows = []
    loose = [n for n in os.listdir(root) if is_image_name(n)]
    bar = _bar("listing images", progress)
    for folder in sources:
        source = as_label(folder)
        for rel, names in scan_images(os.path.join(root, folder), skipped):
            parts = rel.split("/") if rel else []
            subset = next((p for p in parts if subset_role(p) is not None), "all")
            prefix = f"{folder}/{rel}/" if rel else f"{folder}/"
            rows.extend((prefix + n, source, subset) for n in names)
            bar.update(len(names))
    bar.close()
    skipped.print()
    if not rows:
        raise CatalogError(f"{root}: no image files found under {', '.join(sources)}")
    if loose and progress:
        print(f"note: {len(loose)} image files directly in {root} belong to no source folder and are "
              f"ignored (e.g. {loose[0]})", file=sys.stderr)
    return ImageList.from_rows(rows, root, where=root)


FOLDER_SUBSETS = ("train", "val", "test")
# Other spellings of the three subsets (lower-cased) seen in public datasets' folder names.
_SUBSET_ALIASES = {"training": "train", "valid": "val", "validation": "val", "testing": "test"}
LIST_HEADER_NAMES = ("row", "path", "source", "subset")
EXISTS_CHECK = 20  # read_list: how many listed files are looked for on disk before trusting --root


def subset_role(name: str) -> str | None:
    """``train``, ``val`` or ``test`` for a subset name in any case or common long form, else None.

    ``Train/``, ``Validation/`` and ``testing/`` folders (and such subsets in a list file) mean what they
    say: pooling them into one 60/20/20 cut would test on training images without a word.
    """
    name = name.strip().lower()
    return name if name in FOLDER_SUBSETS else _SUBSET_ALIASES.get(name)


def _check_root_has_listed_files(rows: list[tuple[str, str, str]], first_line: int, root: str,
                                 list_file: str, default_root: bool) -> None:
    """Refuse a list none of whose first :data:`EXISTS_CHECK` files exist under ``root``.

    A wrong ``--root`` would otherwise extract a feature set in which every image failed, with the
    same identity (the root is not part of it) as the right run, so the rerun would reuse the failed
    rows. ``os.path.exists`` on a few files is cheap; a list with only some files missing still runs
    (those rows are recorded as failed).
    """
    head = rows[:EXISTS_CHECK]
    if any(os.path.exists(os.path.join(root, rel)) for rel, _, _ in head):
        return
    what = "the list file's folder, the default --root" if default_root else "--root"
    raise CatalogError(f"{list_file}: none of the first {len(head)} listed files exist under {root} ({what}); "
                       f"e.g. line {first_line}: {os.path.join(root, head[0][0])}. Pass --root DIR, the folder "
                       f"the list's relative paths start from")


def read_list(list_file: str | os.PathLike, root: str | os.PathLike | None = None) -> ImageList:
    """``--dataset list``: one ``path<TAB>source[<TAB>subset]`` per line.

    Blank lines and lines starting with ``#`` are skipped. A first line naming its columns (``path``,
    ``source``, optionally ``subset`` and ``row``, in any order) is a header, so a feature set's own
    ``images.tsv`` is a valid list; a header with ``row`` marks that form, whose paths are read as
    :meth:`ImageList.read_tsv` reads them (escapes decoded, a backslash is part of a name, not a Windows
    separator), so its names round-trip exactly. Relative paths are relative to ``root`` (default: the list file's
    folder); the subset defaults to ``all``. Errors name the file and line. A ``root`` that is not a
    folder, or under which none of the first listed files exist, is refused before anything is extracted.
    """
    list_file = os.fspath(list_file)
    if not os.path.isfile(list_file):
        raise CatalogError(f"--list {list_file!r} does not exist")
    if root and not os.path.isdir(root):
        raise CatalogError(f"--root {os.fspath(root)!r} is not a folder (relative paths of --list {list_file} "
                           f"start there)")
    default_root = not root
    root = os.fspath(root) if root else os.path.dirname(os.path.abspath(list_file))
    cols: dict[str, int] | None = None
    rows = []
    seen: dict[str, int] = {}
    for lineno, line in text_lines(list_file, CatalogError):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [x.strip() for x in line.split("\t")]
        where = f"{list_file}:{lineno}"
        if cols is None and not rows:
            if "path" in fields and "source" in fields and set(fields) <= set(LIST_HEADER_NAMES):
                cols = {name: i for i, name in enumerate(fields)}
                continue
        if cols is not None:
            if len(fields) != len(cols):
                raise CatalogError(f"{where}: expected {len(cols)} tab-separated fields "
                                   f"({', '.join(cols)}), got {len(fields)}: {line!r}")
            path, source = fields[cols["path"]], fields[cols["source"]]
            subset = fields[cols["subset"]] if "subset" in cols else "all"
        else:
            if len(fields) not in (2, 3):
                raise CatalogError(f"{where}: expected path<TAB>source[<TAB>subset], got {len(fields)} "
                                   f"tab-separated fields: {line!r}")
            path, source = fields[0], fields[1]
            subset = fields[2] if len(fields) == 3 else "all"
        _check_field(path, "path", where)
        _check_field(source, "source", where)
        _check_field(subset, "subset", where)
        if cols is not None and "row" in cols:  # an images.tsv: attrib wrote its paths
            path = unescape_path(line.split("\t")[cols["path"]])
        else:
            path = path.replace("\\", "/")
        rel = _relpath(path, root) if os.path.isabs(path) else posixpath.normpath(path)
        if rel in seen:
            raise CatalogError(f"{where}: duplicate path {rel!r} (first on line {seen[rel]})")
        seen[rel] = lineno
        rows.append((rel, source, subset))
    if not rows:
        raise CatalogError(f"{list_file}: no images listed (expected path<TAB>source[<TAB>subset] lines)")
    _check_root_has_listed_files(rows, next(iter(seen.values())), root, list_file, default_root)
    return ImageList.from_rows(rows, root, where=list_file)


SEEDED_KEY_SIZE = 8


def seeded_key(seed: int | str, text: str) -> bytes:
    """A :data:`SEEDED_KEY_SIZE`-byte pseudo-random sort key for ``text`` under ``seed``.

    The seeded draws of the data code (``--max-per-source``, the split protocol) sort images by it
    instead of shuffling a list, so a draw depends on neither listing order nor other images, and the
    same seed gives the same draw on every machine and Python version. Views seed their per-image
    randomness from it too (``seed`` = the view spec).
    """
    return hashlib.blake2b(path_bytes(f"{seed}\0{text}"), digest_size=SEEDED_KEY_SIZE).digest()


def sample_per_source(images: ImageList, max_per_source: int, seed: int = 0) -> ImageList:
    """At most ``max_per_source`` images per (source, subset), chosen by a seeded, order-free draw.

    Each path gets a :func:`seeded_key` from (seed, path), and the smallest keys win: the choice does
    not depend on listing order, and growing N only adds images.
    """
    if max_per_source <= 0:
        raise CatalogError(f"--max-per-source must be positive, got {max_per_source}")
    groups: dict[tuple[str, str], list[tuple[bytes, int]]] = {}
    for i, (p, s, sub) in enumerate(images):
        groups.setdefault((s, sub), []).append((seeded_key(seed, p), i))
    keep = []
    for members in groups.values():
        members.sort()
        keep.extend(i for _, i in members[:max_per_source])
    return images.take(keep)


def resolve_root(root: str | os.PathLike) -> str:
    return str(Path(root).expanduser().resolve())

