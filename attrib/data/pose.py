"""The paper's split files (POSE format): finding them, reading them, and the splits they define.

The paper (and POSE before it) ships each open-set split as ``path<TAB>label`` text files, one per part
(train, validation, test; known classes and unknown generators). :class:`PoseSplits` turns them into a
:class:`attrib.data.splits.SplitSource` with fixed rows; :func:`restrict_to_pose` is the stage-1 side,
``attrib features --splits-dir``: extract exactly the images the files name.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from attrib.data.catalog import CatalogError, ImageList, text_lines
from attrib.data.genimage import genimage_key
from attrib.data.pathmatch import AMBIGUOUS, MISSING, PathMatcher
from attrib.data.splits import Split, SplitError, SplitRows, builtin_splits, check_groups, select_splits

# The paper's code caps every file at 4000 images per class (first in file order).
POSE_PER_CLASS = 4000
SHOW = 20  # how many offending lines an error lists
# What each part's file is called (after the split's name), for errors about a missing one.
PART_FILES = {"train": "_train.txt", "val": "_val.txt", "test": "_test.txt",
              "val_out": "_val_out_all.txt", "test_out": "_test_out_all.txt"}
_POSE_NAME = re.compile(r"^(?P<name>.+?)_(?P<part>train|val|test)(?:_out(?:_(?P<group>[^.]+))?|(?P<bare>))\.txt$")
# DiffusionForensics' release names its unknown test file just test_out.txt, in df_test/annotations/.
_BARE_OUT = re.compile(r"^(?P<part>val|test)_out(?:_(?P<group>[^.]+))?\.txt$")


def _pose_part(f: Path) -> tuple[str, str, int] | None:
    """(split name, part, rank) of a split file, or None. Parts: ``train``, ``val``, ``test``, ``val_out``,
    ``test_out`` (every unknown generator: ``*_out_all.txt``, rank 0, or POSE's ``*_out.txt``, rank 1) and
    ``test_out:GROUP`` / ``val_out:GROUP`` (the paper's OSMA ``split1_test_out_seed.txt``: one group of
    unknown generators). A bare ``test_out*.txt`` takes its split's name from its folder
    (``df_test/annotations/test_out.txt`` is split ``df``)."""
    m = _POSE_NAME.match(f.name)
    if m:
        name, part, group, known = m.group("name"), m.group("part"), m.group("group"), m.group("bare") is not None
    else:
        m = _BARE_OUT.match(f.name)
        folder = f.parent.parent if f.parent.name == "annotations" else f.parent
        if not m or not folder.name.endswith("_" + m.group("part")):
            return None
        name, part, group, known = folder.name[: -len(m.group("part")) - 1], m.group("part"), m.group("group"), False
    if known:
        return name, part, 0
    if part == "train":
        return None
    if group in (None, "all"):
        return name, part + "_out", 0 if group == "all" else 1  # _out_all beats POSE's _out
    return name, f"{part}_out:{group}", 0


def find_pose_files(splits_dir: str | os.PathLike) -> dict[str, dict[str, Path]]:
    """The split files under ``splits_dir``, by split name and part.

    The paper's release (``dataset/GenImage/`` in its repository) names them::

        split1_train/annotations/split1_train.txt           known classes, training
        split1_val/annotations/split1_val.txt               known classes, validation
        split1_val/annotations/split1_val_out_all.txt       unknown generators, validation
        split1_test/annotations/split1_test.txt             known classes, test
        split1_test/annotations/split1_test_out_all.txt     unknown generators, test

    The same file names directly in ``splits_dir`` or one folder down work too, as does POSE's
    ``*_test_out.txt`` for ``*_test_out_all.txt``, groups of unknown generators in
    ``*_test_out_GROUP.txt`` (OSMA: ``split1_test_out_seed.txt``, ``_arch``, ``_dataset``), and
    DiffusionForensics' ``df_test/annotations/test_out.txt``. Only the top three levels are looked at, so
    pointing at a dataset folder that also holds millions of images costs nothing.
    """
    d = Path(splits_dir)
    if not d.is_dir():
        raise SplitError(f"--splits-dir {str(splits_dir)!r} is not a folder")
    found: dict[str, dict[str, tuple[int, Path]]] = {}
    for pattern in ("*.txt", "*/*.txt", "*/annotations/*.txt"):
        for f in sorted(d.glob(pattern)):
            parsed = _pose_part(f) if f.is_file() else None
            if parsed is None:
                continue
            name, part, rank = parsed
            cur = found.setdefault(name, {}).get(part)
            if cur is not None and cur[0] == rank and cur[1] != f:
                raise SplitError(f"{d}: two files for split {name} {part}: {cur[1]} and {f}")
            if cur is None or rank < cur[0]:
                found[name][part] = (rank, f)
    out = {name: {p: f for p, (_, f) in parts.items()} for name, parts in found.items() if "train" in parts}
    if not out:
        raise SplitError(f"--splits-dir {d}: no split files found (expected e.g. "
                         f"split1_train/annotations/split1_train.txt, as in the paper's release)")
    return dict(sorted(out.items(), key=lambda kv: _natural(kv[0])))


def _selected(files: dict[str, dict[str, Path]], only: str | None) -> dict[str, dict[str, Path]]:
    """The split files of the ``--splits`` selection (``only``; None = all), by split name."""
    return {n: files[n] for n in select_splits({n: Split(n, (), ()) for n in files}, only)}


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


@dataclass
class PoseLine:
    file: Path
    line: int
    path: str
    label: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def read_pose_file(path: str | os.PathLike) -> list[PoseLine]:
    """``path<TAB>label`` lines (label an integer); blank lines skipped; errors name file and line."""
    path = Path(path)
    out = []
    for lineno, line in text_lines(path, SplitError):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise SplitError(f"{path}:{lineno}: expected path<TAB>label, got {len(fields)} tab-separated "
                             f"field(s): {line!r}")
        p, lab = fields[0].strip(), fields[1].strip()
        if not p or not re.fullmatch(r"\d+", lab):
            raise SplitError(f"{path}:{lineno}: expected path<TAB>label with a non-negative integer label, "
                             f"got {line!r}")
        out.append(PoseLine(path, lineno, p, int(lab)))
    return out


def _listing(items: list[str], total: int) -> str:
    more = f"\n  ... and {total - len(items)} more" if total > len(items) else ""
    return "\n  " + "\n  ".join(items) + more


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class PoseSplits:
    """The paper's split files (POSE format) as a :class:`SplitSource`: fixed rows, the same for every seed.

    Labels index the split's class list: in ``*_train``, ``*_val`` and ``*_test`` files ``real`` = 0 and
    known generator k = k (1-based, in the split's order); in ``*_out*`` files an unknown generator's
    position in the split's unknown list (0-based; labels offset by the number of known classes are
    recognised too). Class names come from ``splits`` (a ``--split-file``) or from the built-in splits of
    the dataset (``splitN`` = the paper's GenImage split N).

    Paths are matched to the feature set's image list with :class:`attrib.data.pathmatch.PathMatcher`
    (whatever the split files' root, either GenImage layout). A path that matches nothing is reported
    (the first 20 and the count) and is an error unless ``allow_missing``; an ambiguous path, a path
    listed twice, and a label that contradicts the image's folder are always errors.

    As in the paper's code, each file keeps at most ``*_per_class`` images per class, the first in file
    order (default 4000 for every part). ``known_test="val"`` evaluates known classes on ``*_val.txt``,
    as the paper's code does (its ``test_data_path`` is the val file); the default is ``*_test.txt``.
    """

    def __init__(self, images: ImageList, ok: np.ndarray, splits_dir: str | os.PathLike,
                 splits: dict[str, Split] | None = None, dataset_kind: str = "genimage",
                 train_per_class: int | None = POSE_PER_CLASS, val_per_class: int | None = POSE_PER_CLASS,
                 test_per_class: int | None = POSE_PER_CLASS, known_test: str = "test",
                 allow_missing: bool = False, only: str | None = None):
        if known_test not in ("test", "val"):
            raise SplitError(f"known_test must be 'test' or 'val', got {known_test!r}")
        self.images, self.ok = images, np.asarray(ok, bool)
        self.dir = Path(splits_dir)
        self.caps = {"train": train_per_class, "val": val_per_class, "test": test_per_class}
        self.known_test = known_test
        self.allow_missing = allow_missing
        files = find_pose_files(splits_dir)
        self._files = _selected(files, only)  # before naming classes: unselected splits need no names
        self._splits = self._definitions(list(self._files), splits, dataset_kind, alone=len(files) == 1)
        self._matcher = PathMatcher(images, key=genimage_key)
        self._notes: list[str] = []
        self._rows = {name: self._build(sp, self._files[name]) for name, sp in self._splits.items()}

    @staticmethod
    def _definitions(names: list[str], splits: dict[str, Split] | None, kind: str,
                     alone: bool) -> dict[str, Split]:
        """Class names for each split: from the split file, else built in (splitN -> N). ``alone``: the
        folder holds one split, which a split file defining one split names whatever its key."""
        builtin = builtin_splits(kind)
        source = splits if splits is not None else builtin
        out = {}
        for name in names:
            num = re.fullmatch(r"split(\d+)", name)
            cands = [name] + ([num.group(1)] if num else [])
            sp = next((source[c] for c in cands if c in source), None)
            if sp is None:
                if splits is not None and alone and len(splits) == 1:
                    sp = next(iter(splits.values()))
                else:
                    raise SplitError(
                        f"--splits-dir: split files for {name!r} but no class names for it: pass --split-file "
                        f"naming its known and unknown generators in label order ({name}: {{known: [...], "
                        f"unknown: [...]}})" + (f"; built-in splits: {', '.join(builtin)}" if builtin else ""))
            out[name] = replace(sp, name=name)
        return out

    def _build(self, split: Split, files: dict[str, Path]) -> SplitRows:
        """The rows of one split: every needed file read, problems raised or noted, caps applied, and
        each class checked to still have the images it needs."""
        need = self._needed_parts(split, files)
        problems: dict[str, list[str]] = {"missing": [], "ambiguous": [], "duplicate": [], "label": [], "failed": []}
        seen: dict[int, str] = {}
        parts = {part: self._read(split, part, files[part], seen, problems) for part in need}
        parts["val_out"], _ = self._unknown_rows(split, "val_out", files, seen, problems)
        parts["test_out"], found = self._unknown_rows(split, "test_out", files, seen, problems)
        split = self._splits[split.name] = _with_groups(split, found)
        notes: list[str] = []
        if self.known_test == "val":
            notes.append(f"split {split.name}: known classes are tested on {files['val'].name}, the file "
                         f"that also selects hyperparameters (as the paper's code does)")
        notes += self._problems(split, problems)
        tr, va = _capped(parts["train"], self.caps["train"]), _capped(parts["val"], self.caps["val"])
        te = _capped(parts[self.known_test], self.caps["test"])
        vu, tu = _capped(parts["val_out"], self.caps["val"]), _capped(parts["test_out"], self.caps["test"])
        notes += self._check_classes(split, files, tr, va, te, vu, tu)
        self._notes.extend(notes)
        unk = split.unknown
        return SplitRows.from_lists(
            split, [r for r, _ in tr], [y for _, y in tr], [r for r, _ in va], [y for _, y in va],
            [r for r, _ in te], [y for _, y in te], [r for r, _ in vu], [unk[y] for _, y in vu],
            [r for r, _ in tu], [unk[y] for _, y in tu], notes)

    def _needed_parts(self, split: Split, files: dict[str, Path]) -> list[str]:
        """The parts a study reads (known classes are tested on ``*_test.txt``, or ``*_val.txt``); a
        missing file is an error naming it."""
        need = list(dict.fromkeys(["train", "val", self.known_test]))
        absent = [p for p in need + ["test_out"] if p not in files]
        if "test_out" in absent and any(p.startswith("test_out:") for p in files):
            absent.remove("test_out")  # the groups' files together are the unknown test images
        if absent:
            hint = (" (the paper's code evaluates known classes on the val file: --known-test val)"
                    if absent == ["test"] else "")
            raise SplitError(f"--splits-dir {self.dir}: split {split.name} has no "
                             f"{', '.join(split.name + PART_FILES[p] for p in absent)}{hint}")
        return need

    def _unknown_rows(self, split: Split, kind: str, files: dict[str, Path], seen: dict[int, str],
                      problems: dict[str, list[str]]) -> tuple[list[tuple[int, int]], dict[str, tuple[str, ...]]]:
        """(row, index into ``split.unknown``) of the unknown generators' ``kind`` part (``val_out`` or
        ``test_out``), and the groups its group files (``*_test_out_seed.txt``) hold: group -> generators.

        The part's rows come from its file of every unknown generator (``*_out_all.txt`` / ``*_out.txt``);
        without one, from the union of its group files. A group file's labels index its group's generators
        (as the split file lists them) or the split's unknown list: the reading under which every label is
        in range and agrees with the images' source folders is taken (see :meth:`_group_table`).
        """
        found: dict[str, tuple[str, ...]] = {}
        union: dict[int, int] = {}
        for part in (p for p in files if p.startswith(kind + ":")):
            group = part.split(":", 1)[1]
            lines = read_pose_file(files[part])
            table = self._group_table(split, group, lines)
            own = problems if kind not in files else {k: [] for k in problems}  # else the all file reports
            rows = [(r, split.unknown.index(table[y]))
                    for r, y in self._read(split, part, files[part], {}, own, table, lines)]
            if own is not problems:
                self._problems(split, own)  # its contradictions are errors; missing images are the all file's
            for r, y in rows:
                union.setdefault(r, y)
            found[group] = tuple(n for i, n in enumerate(split.unknown) if i in {y for _, y in rows})
        if kind in files:
            return self._read(split, kind, files[kind], seen, problems, split.unknown), found
        return list(union.items()), found

    def _group_table(self, split: Split, group: str, lines: list[PoseLine]) -> tuple[str, ...]:
        """The generators a group file's labels (its ``lines``) index: the group's own list when the split
        names the group and that reading fits the file, else the split's unknown list; an error when
        neither fits."""
        tables = ([split.unknown_groups[group]] if group in split.unknown_groups else []) + [split.unknown]
        for table in tables:
            offset = _label_offset({ln.label for ln in lines}, len(table), len(split.classes))
            if all(0 <= ln.label - offset < len(table) and self._agrees(ln, table[ln.label - offset], split)
                   for ln in lines):
                return table
        return tables[-1]  # _read names the first line that does not fit

    def _agrees(self, ln: PoseLine, name: str, split: Split) -> bool:
        """Whether a line's label name agrees with its image's source folder (unknowable ones agree)."""
        row = self._matcher.match(ln.path)
        if row in (MISSING, AMBIGUOUS):
            return True
        src = self.images.sources[row]
        return src == name or src not in set(split.classes) | set(split.unknown)

    def _read(self, split: Split, part: str, path: Path, seen: dict[int, str], problems: dict[str, list[str]],
              table: tuple[str, ...] | None = None, lines: list[PoseLine] | None = None) -> list[tuple[int, int]]:
        """(row, label) of one file, in file order; failed rows dropped; problems collected. ``table``: the
        unknown generators its labels index (None: a file of known classes, labels index ``split.classes``).
        ``lines``: the file's lines when the caller has read them already."""
        unknown = table is not None
        names = table if unknown else split.classes
        n_labels = len(names)
        named = set(split.classes) | set(split.unknown)
        lines = read_pose_file(path) if lines is None else lines
        if not lines:
            raise SplitError(f"{path}: empty split file")
        offset = _label_offset({ln.label for ln in lines}, n_labels, len(split.classes)) if unknown else 0
        out = []
        for ln in lines:
            lab = ln.label - offset
            if not 0 <= lab < n_labels:
                raise SplitError(f"{ln.where}: label {ln.label} out of range: {split.where} has {n_labels} "
                                 f"{'unknown' if unknown else 'known'} classes "
                                 f"({', '.join(f'{i + offset}={n}' for i, n in enumerate(names))})")
            row = self._matcher.match(ln.path)
            if row == MISSING:
                problems["missing"].append(f"{ln.where}: {ln.path}")
                continue
            if row == AMBIGUOUS:
                problems["ambiguous"].append(f"{ln.where}: {ln.path}")
                continue
            if row in seen:
                problems["duplicate"].append(f"{ln.where}: {ln.path} (also {seen[row]})")
                continue
            seen[row] = ln.where
            want = names[lab]
            src = self.images.sources[row]
            if src != want and src in named:
                problems["label"].append(f"{ln.where}: label {ln.label} = {want}, but "
                                         f"{self.images.paths[row]} is listed as {src}")
                continue
            if not self.ok[row]:
                problems["failed"].append(ln.where)
                continue
            out.append((row, lab))
        return out

    def _problems(self, split: Split, problems: dict[str, list[str]]) -> list[str]:
        """Raise on entries that cannot be meant (ambiguous, listed twice, contradicting their folder) and
        on images not in the feature set unless ``allow_missing``; the notes on what was left out."""
        for kind, what in (("ambiguous", "match several images of the feature set (give fuller paths)"),
                           ("duplicate", "are listed twice within the split"),
                           ("label", "have a label that contradicts the image's source folder")):
            if problems[kind]:
                raise SplitError(f"--splits-dir {self.dir}: {len(problems[kind])} entries of split {split.name} "
                                 f"{what}:" + _listing(problems[kind][:SHOW], len(problems[kind])))
        notes = []
        if problems["missing"]:
            missing = problems["missing"]
            msg = (f"{len(missing)} images named by split {split.name} are not in this feature set "
                   f"({self.images.root or 'no root'}):" + _listing(missing[:SHOW], len(missing)))
            if not self.allow_missing:
                raise SplitError(msg + "\nExtract them (e.g. `attrib features --dataset genimage --root DIR "
                                 f"--splits-dir {self.dir}`), or pass --allow-missing to run without them.")
            notes.append(msg)
        if problems["failed"]:
            notes.append(f"split {split.name}: {len(problems['failed'])} listed images failed to decode at "
                         f"extraction and are excluded (e.g. {problems['failed'][0]})")
        return notes

    def _check_classes(self, split: Split, files: dict[str, Path], tr: list, va: list, te: list, vu: list,
                       tu: list) -> list[str]:
        """After caps: every known class needs train, validation and test rows, the unknown generators
        validation and test rows (an error naming the file); the note on unknown generators not tested."""
        for part, rows, f in (("train", tr, files["train"]), ("validation", va, files["val"]),
                              ("test", te, files[self.known_test])):
            have = {lab for _, lab in rows}
            for lab, name in enumerate(split.classes):
                if lab not in have:
                    raise SplitError(f"{f}: known class {name!r} (label {lab}) of split {split.name} has no usable "
                                     f"{part} images")
        test_out = files.get("test_out") or next(f for p, f in files.items() if p.startswith("test_out:"))
        notes = []
        for part, rows, f in (("validation", vu, files.get("val_out")), ("test", tu, test_out)):
            if f is None:  # OSMA and DiffusionForensics ship no unknown validation file
                notes.append(f"split {split.name}: no {split.name}{PART_FILES['val_out']}: no validation images of "
                             "unknown generators (--protocol paper needs them; --protocol clean does not)")
            elif not rows:
                raise SplitError(f"{f}: split {split.name} has no usable unknown {part} images")
        tested = {lab for _, lab in tu}
        absent_unknown = [n for i, n in enumerate(split.unknown) if i not in tested]
        if absent_unknown:
            notes.append(f"split {split.name}: no test images of unknown generator(s) "
                         f"{', '.join(absent_unknown)} in {test_out.name}")
        return notes

    def names(self) -> list[str]:
        return list(self._splits)

    def split(self, name: str) -> Split:
        return self._splits[name]

    def rows(self, name: str, seed: int) -> SplitRows:
        return self._rows[name]

    def describe(self, name: str) -> dict[str, Any]:
        sp = self._splits[name]
        return {"kind": "pose-files", "dir": str(self.dir), "known": list(sp.known), "unknown": list(sp.unknown),
                **({"groups": {g: list(m) for g, m in sp.groups}} if sp.groups else {}),
                "known_test": self.known_test, "per_class": self.caps,
                "files": {p: {"path": str(f), "sha256": _sha256(f)} for p, f in self._files[name].items()}}

    def notes(self) -> list[str]:
        return list(self._notes)


def _label_offset(labels: set[int], n_labels: int, n_classes: int) -> int:
    """0, or ``n_classes`` when an unknown file's labels continue after the known classes' labels."""
    return n_classes if max(labels) >= n_labels and min(labels) >= n_classes else 0


def _with_groups(split: Split, found: dict[str, tuple[str, ...]]) -> Split:
    """The split with the groups its group files hold: a group the split file names keeps its list (the
    file must not hold other generators); a group only the files name is what they hold."""
    defined = split.unknown_groups
    for group, members in found.items():
        stray = [m for m in members if group in defined and m not in defined[group]]
        if stray:
            raise SplitError(f"{split.where}: the split files' unknown group {group!r} holds {', '.join(stray)}, "
                             f"which the split file does not list in group {group!r}")
    groups = {**defined, **{g: m for g, m in found.items() if g not in defined}}
    out = replace(split, groups=tuple(groups.items()))
    check_groups(out)
    return out


def _capped(rows: list[tuple[int, int]], cap: int | None) -> list[tuple[int, int]]:
    """The first ``cap`` (row, label) pairs of each label, in file order (None = all), as the paper's code."""
    kept, count = [], {}
    for row, lab in rows:
        if cap is None or count.get(lab, 0) < cap:
            kept.append((row, lab))
            count[lab] = count.get(lab, 0) + 1
    return kept


def pose_image_paths(splits_dir: str | os.PathLike, only: str | None = None) -> list[PoseLine]:
    """Every image line of the split files under ``splits_dir`` (all parts, ``only`` splits), to extract
    exactly the images the paper's splits use."""
    files = _selected(find_pose_files(splits_dir), only)
    return [ln for parts in files.values() for f in parts.values() for ln in read_pose_file(f)]


def restrict_to_pose(images: ImageList, splits_dir: str | os.PathLike, only: str | None = None) -> ImageList:
    """The rows of ``images`` that the split files under ``splits_dir`` name; a named image that is not
    in the listing is an error listing the first 20 and the count."""
    matcher = PathMatcher(images, key=genimage_key)
    keep: set[int] = set()
    missing, ambiguous = [], []
    for ln in pose_image_paths(splits_dir, only):
        row = matcher.match(ln.path)
        if row == MISSING:
            missing.append(f"{ln.where}: {ln.path}")
        elif row == AMBIGUOUS:
            ambiguous.append(f"{ln.where}: {ln.path}")
        else:
            keep.add(row)
    for bad, what in ((ambiguous, "match several listed images"), (missing, "are not under --root")):
        if bad:
            raise CatalogError(f"--splits-dir {splits_dir}: {len(bad)} images named by the split files {what} "
                               f"({images.root}):" + _listing(bad[:SHOW], len(bad)))
    return images.take(sorted(keep))


__all__ = ["PoseSplits", "PoseLine", "POSE_PER_CLASS", "find_pose_files", "read_pose_file", "pose_image_paths",
           "restrict_to_pose"]
