"""Open-set splits: which cached rows train, validate and test a split, and how labels are assigned.

A split names its known sources (class 0 is always ``real``, then the known generators in the split's
order) and its unknown sources (generators never seen in training). Studies get splits from a
:class:`SplitSource`; three kinds exist:

- :class:`SampledSplits` (built-in splits, or a YAML/JSON ``--split-file``): rows drawn from the feature
  set's image list by seed, with the protocol below;
- :class:`PoseSplits` (``--splits-dir``): the paper's own split files, read as they are; the rows are
  fixed and the seed does not change them.

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

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from attrib.data.catalog import (AMBIGUOUS, MISSING, REAL, SEEDED_KEY_SIZE, ImageList, PathMatcher,
                                 seeded_key, subset_role, text_lines)
from attrib.errors import AttribError

DEFAULT_TRAIN_PER_CLASS = 4000
DEFAULT_VAL_PER_CLASS = 1000
DEFAULT_TEST_PER_CLASS = 4000
# The paper's code caps every file at 4000 images per class (first in file order).
POSE_PER_CLASS = 4000
VAL_FRACTION = 0.2
ALL_FRACTIONS = (0.6, 0.2)  # train, validation shares of a class found in no train/val/test folder
SHOW = 20  # how many offending lines an error lists


class SplitError(AttribError, ValueError):
    """A split cannot be built from this image list; the message names the file, line, source or class."""


@dataclass(frozen=True)
class Split:
    name: str
    known: tuple[str, ...]
    unknown: tuple[str, ...]
    origin: str = ""  # where it was defined ("built-in", "splits.yaml:4"), for error messages

    @property
    def classes(self) -> tuple[str, ...]:
        return (REAL,) + tuple(self.known)

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

    def sizes(self) -> dict[str, int]:
        return {k: int(len(getattr(self, k))) for k in ("train", "val", "test", "val_unknown", "test_unknown")}


def _int(x: list[int]) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def _obj(x: list[str]) -> np.ndarray:
    return np.asarray(x, dtype=object)


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
    if available is not None:
        missing = [s for s in split.classes + split.unknown if not available.get(s)]
        if missing:
            have = ", ".join(f"{s} ({n})" for s, n in sorted(available.items())) or "none"
            raise SplitError(f"{split.where}: source(s) {', '.join(missing)} have no usable images in this "
                             f"feature set; sources present: {have}")


def _usable(images: ImageList, ok: np.ndarray) -> dict[str, int]:
    out: dict[str, int] = {}
    for s, good in zip(images.sources, np.asarray(ok, bool)):
        if good:
            out[s] = out.get(s, 0) + 1
    return out


def load_split_file(path: str | os.PathLike) -> dict[str, Split]:
    """Splits from a small YAML or JSON file; errors name the file and line.

    Format (``real`` is always class 0 and need not be listed)::

        splits:                      # optional top-level key
          A:
            known: [gen1, gen2]      # label order: real = 0, gen1 = 1, gen2 = 2
            unknown: [gen3, gen4]

    The paper's own config keys are accepted too (``known_classes`` with ``real`` first, and
    ``unknown_classes`` as a list or as ``{all: [...]}``), so its ``configs/data/genimage.yaml`` reads as is.
    JSON is read as JSON (see :func:`_compose_split_file`), so tab-indented JSON works too.
    """
    import yaml

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SplitError(f"--split-file {path!r} does not exist")
    root = _compose_split_file(path)

    def at(node) -> str:
        return f"{path}:{node.start_mark.line + 1}" if node.start_mark is not None else path

    def mapping(node, what: str) -> list[tuple[Any, Any]]:
        if not isinstance(node, yaml.MappingNode):
            raise SplitError(f"{at(node)}: {what} must be a mapping (name: value)")
        return node.value

    def names(node, what: str) -> tuple[str, ...]:
        if isinstance(node, yaml.MappingNode):  # the paper's {all: [...]}
            items = dict((k.value, v) for k, v in node.value)
            if list(items) != ["all"]:
                raise SplitError(f"{at(node)}: {what} must be a list of source names (or {{all: [...]}})")
            node = items["all"]
        if not isinstance(node, yaml.SequenceNode):
            raise SplitError(f"{at(node)}: {what} must be a list of source names, e.g. [gen1, gen2]")
        out = []
        for item in node.value:
            if not isinstance(item, yaml.ScalarNode) or not str(item.value).strip():
                raise SplitError(f"{at(item)}: {what}: each entry must be a source name")
            out.append(str(item.value).strip())
        return tuple(out)

    if root is None:
        raise SplitError(f"{path}: empty split file")
    entries = mapping(root, "the split file")
    if len(entries) == 1 and entries[0][0].value == "splits":
        entries = mapping(entries[0][1], "'splits'")
    splits: dict[str, Split] = {}
    for key, body in entries:
        name = str(key.value).strip()
        if name in splits:
            raise SplitError(f"{at(key)}: split {name!r} defined twice")
        fields = {k.value: v for k, v in mapping(body, f"split {name!r}")}
        known_key = next((k for k in ("known", "known_classes") if k in fields), None)
        unknown_key = next((k for k in ("unknown", "unknown_classes") if k in fields), None)
        if known_key is None or unknown_key is None:
            raise SplitError(f"{at(key)}: split {name!r} needs 'known' and 'unknown' lists")
        known = names(fields[known_key], f"split {name!r} {known_key}")
        if REAL in known:
            if known[0] != REAL:
                raise SplitError(f"{at(fields[known_key])}: split {name!r}: '{REAL}' must come first (label 0) "
                                 f"or not be listed")
            known = known[1:]
        unknown = names(fields[unknown_key], f"split {name!r} {unknown_key}")
        sp = Split(name, known, unknown, at(key))
        check_split(sp)
        splits[name] = sp
    if not splits:
        raise SplitError(f"{path}: no splits defined")
    return splits


def _compose_split_file(path: str):
    """The node tree of a YAML or JSON split file (line numbers kept for errors), or None when empty.

    YAML readers refuse tabs as indentation, which JSON allows, so JSON (a ``.json`` file, or any file
    that is not YAML but parses as JSON) is checked with :mod:`json` first: a syntax error names its line
    and column as a JSON error. In valid JSON a literal tab can only be whitespace between tokens (tabs
    in strings must be escaped), so the text with tabs turned into spaces means the same and the YAML
    composer gives its nodes with their lines. JSON that YAML still refuses (raw control characters such
    as DEL in a string) falls back to nodes built from the decoded JSON, without line numbers.
    """
    import json

    import yaml

    text = "".join(line + "\n" for _, line in text_lines(path, SplitError))
    is_json = path.lower().endswith(".json")
    if not is_json:
        try:
            return yaml.compose(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            yaml_error = (f"{path}{f':{mark.line + 1}' if mark is not None else ''}: not valid YAML/JSON: "
                          f"{getattr(exc, 'problem', None) or exc}")
            if not text.lstrip().startswith(("{", "[")):
                raise SplitError(yaml_error) from None
    try:
        data = json.loads(text, object_pairs_hook=_JsonObject)
    except json.JSONDecodeError as exc:
        if not is_json:
            raise SplitError(yaml_error) from None
        raise SplitError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg} (column {exc.colno})") from None
    try:
        return yaml.compose(text.replace("\t", " "))
    except yaml.YAMLError:
        return _json_nodes(data)


class _JsonObject(list):
    """A decoded JSON object as its (key, value) pairs in file order, duplicates kept (they are errors)."""


def _json_nodes(data: Any):
    """YAML nodes, without line marks, for JSON decoded with ``object_pairs_hook=_JsonObject``."""
    import yaml

    if isinstance(data, _JsonObject):
        return yaml.MappingNode("tag:yaml.org,2002:map", [(_json_nodes(k), _json_nodes(v)) for k, v in data])
    if isinstance(data, list):
        return yaml.SequenceNode("tag:yaml.org,2002:seq", [_json_nodes(x) for x in data])
    return yaml.ScalarNode("tag:yaml.org,2002:str", "" if data is None else str(data))


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


# ---------------------------------------------------------------------------------- sampled rows
def _key(seed: int, path: str) -> bytes:
    """The file name's seeded key (so copies of one photo sort together), then the path to break ties."""
    return seeded_key(seed, path.rsplit("/", 1)[-1]) + path.encode()


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
    return SplitRows(split, _int(tr), _int(ytr), _int(va), _int(yva), _int(te), _int(yte),
                     _int(vu), _obj(vus), _int(tu), _obj(tus), notes)


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
                **self.caps}

    def notes(self) -> list[str]:
        """The notes of each split's rows (failed images, how subsets were read), from seed 0: none of them
        depends on the seed, and the study draws those rows anyway (they are cached)."""
        return [f"split {name}: {note}" for name in self._splits for note in self.rows(name, 0).notes]


# --------------------------------------------------------------------------------- POSE files
_POSE_NAME = re.compile(r"^(?P<name>.+?)_(?P<part>train|val|test)(?P<out>_out(?:_all)?)?\.txt$")


def find_pose_files(splits_dir: str | os.PathLike) -> dict[str, dict[str, Path]]:
    """The split files under ``splits_dir``, by split name and part.

    The paper's release (``dataset/GenImage/`` in its repository) names them::

        split1_train/annotations/split1_train.txt           known classes, training
        split1_val/annotations/split1_val.txt               known classes, validation
        split1_val/annotations/split1_val_out_all.txt       unknown generators, validation
        split1_test/annotations/split1_test.txt             known classes, test
        split1_test/annotations/split1_test_out_all.txt     unknown generators, test

    The same file names directly in ``splits_dir`` or one folder down work too, as does POSE's
    ``*_test_out.txt`` for ``*_test_out_all.txt``. Only the top three levels are looked at, so pointing
    at a dataset folder that also holds millions of images costs nothing.
    """
    d = Path(splits_dir)
    if not d.is_dir():
        raise SplitError(f"--splits-dir {str(splits_dir)!r} is not a folder")
    found: dict[str, dict[str, tuple[int, Path]]] = {}
    for pattern in ("*.txt", "*/*.txt", "*/annotations/*.txt"):
        for f in sorted(d.glob(pattern)):
            m = _POSE_NAME.match(f.name)
            if not m or not f.is_file():
                continue
            part = m.group("part") + ("_out" if m.group("out") else "")
            if part == "train_out":
                continue
            rank = 0 if m.group("out") in (None, "_out_all") else 1  # _out_all beats POSE's _out
            cur = found.setdefault(m.group("name"), {}).get(part)
            if cur is not None and cur[0] == rank and cur[1] != f:
                raise SplitError(f"{d}: two files for split {m.group('name')} {part}: {cur[1]} and {f}")
            if cur is None or rank < cur[0]:
                found[m.group("name")][part] = (rank, f)
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

    Paths are matched to the feature set's image list with :class:`attrib.data.catalog.PathMatcher`
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
        from attrib.data.genimage import genimage_key

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
            out[name] = Split(name, sp.known, sp.unknown, sp.origin)
        return out

    def _read(self, split: Split, part: str, path: Path, n_labels: int,
              seen: dict[int, str], problems: dict[str, list[str]]) -> list[tuple[int, int]]:
        """(row, label) of one file, in file order; failed rows dropped; problems collected."""
        named = set(split.classes) | set(split.unknown)
        lines = read_pose_file(path)
        if not lines:
            raise SplitError(f"{path}: empty split file")
        labels = {ln.label for ln in lines}
        offset = 0
        if part.endswith("_out") and max(labels) >= n_labels and min(labels) >= len(split.classes):
            offset = len(split.classes)  # labels continue after the known classes
        out = []
        for ln in lines:
            lab = ln.label - offset
            if not 0 <= lab < n_labels:
                names = split.unknown if part.endswith("_out") else split.classes
                raise SplitError(f"{ln.where}: label {ln.label} out of range: {split.where} has {n_labels} "
                                 f"{'unknown' if part.endswith('_out') else 'known'} classes "
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
            want = split.unknown[lab] if part.endswith("_out") else split.classes[lab]
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

    def _build(self, split: Split, files: dict[str, Path]) -> SplitRows:
        test_part = self.known_test  # the file known classes are tested on: *_test.txt, or *_val.txt
        need = list(dict.fromkeys(["train", "val", test_part, "val_out", "test_out"]))
        absent = [p for p in need if p not in files]
        if absent:
            expect = {"train": "_train.txt", "val": "_val.txt", "test": "_test.txt",
                      "val_out": "_val_out_all.txt", "test_out": "_test_out_all.txt"}
            hint = (" (the paper's code evaluates known classes on the val file: --known-test val)"
                    if absent == ["test"] else "")
            raise SplitError(f"--splits-dir {self.dir}: split {split.name} has no "
                             f"{', '.join(split.name + expect[p] for p in absent)}{hint}")
        problems: dict[str, list[str]] = {"missing": [], "ambiguous": [], "duplicate": [], "label": [], "failed": []}
        seen: dict[int, str] = {}
        notes: list[str] = []
        parts: dict[str, list[tuple[int, int]]] = {}
        for part in need:
            n = len(split.unknown) if part.endswith("_out") else len(split.classes)
            parts[part] = self._read(split, part, files[part], n, seen, problems)
        if test_part == "val":
            notes.append(f"split {split.name}: known classes are tested on {files['val'].name}, the file "
                         f"that also selects hyperparameters (as the paper's code does)")
        for kind, what in (("ambiguous", "match several images of the feature set (give fuller paths)"),
                           ("duplicate", "are listed twice within the split"),
                           ("label", "have a label that contradicts the image's source folder")):
            if problems[kind]:
                raise SplitError(f"--splits-dir {self.dir}: {len(problems[kind])} entries of split {split.name} "
                                 f"{what}:" + _listing(problems[kind][:SHOW], len(problems[kind])))
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

        def capped(part: str, cap: int | None) -> list[tuple[int, int]]:
            kept, count = [], {}
            for row, lab in parts[part]:
                if cap is None or count.get(lab, 0) < cap:
                    kept.append((row, lab))
                    count[lab] = count.get(lab, 0) + 1
            return kept

        tr, va, te = capped("train", self.caps["train"]), capped("val", self.caps["val"]), \
            capped(test_part, self.caps["test"])
        vu, tu = capped("val_out", self.caps["val"]), capped("test_out", self.caps["test"])
        for part, rows, f in (("train", tr, files["train"]), ("validation", va, files["val"]),
                              ("test", te, files[test_part])):
            have = {lab for _, lab in rows}
            for lab, name in enumerate(split.classes):
                if lab not in have:
                    raise SplitError(f"{f}: known class {name!r} (label {lab}) of split {split.name} has no usable "
                                     f"{part} images")
        for part, rows, f in (("validation", vu, files["val_out"]), ("test", tu, files["test_out"])):
            if not rows:
                raise SplitError(f"{f}: split {split.name} has no usable unknown {part} images")
        absent_unknown = [n for i, n in enumerate(split.unknown) if i not in {lab for _, lab in tu}]
        if absent_unknown:
            notes.append(f"split {split.name}: no test images of unknown generator(s) "
                         f"{', '.join(absent_unknown)} in {files['test_out'].name}")
        unk = split.unknown
        self._notes.extend(notes)
        return SplitRows(
            split,
            _int([r for r, _ in tr]), _int([y for _, y in tr]),
            _int([r for r, _ in va]), _int([y for _, y in va]),
            _int([r for r, _ in te]), _int([y for _, y in te]),
            _int([r for r, _ in vu]), _obj([unk[y] for _, y in vu]),
            _int([r for r, _ in tu]), _obj([unk[y] for _, y in tu]), notes)

    def names(self) -> list[str]:
        return list(self._splits)

    def split(self, name: str) -> Split:
        return self._splits[name]

    def rows(self, name: str, seed: int) -> SplitRows:
        return self._rows[name]

    def describe(self, name: str) -> dict[str, Any]:
        sp = self._splits[name]
        return {"kind": "pose-files", "dir": str(self.dir), "known": list(sp.known), "unknown": list(sp.unknown),
                "known_test": self.known_test, "per_class": self.caps,
                "files": {p: {"path": str(f), "sha256": _sha256(f)} for p, f in self._files[name].items()}}

    def notes(self) -> list[str]:
        return list(self._notes)


def pose_image_paths(splits_dir: str | os.PathLike, only: str | None = None) -> list[PoseLine]:
    """Every image line of the split files under ``splits_dir`` (all parts, ``only`` splits), to extract
    exactly the images the paper's splits use."""
    files = _selected(find_pose_files(splits_dir), only)
    return [ln for parts in files.values() for f in parts.values() for ln in read_pose_file(f)]


def restrict_to_pose(images: ImageList, splits_dir: str | os.PathLike, only: str | None = None) -> ImageList:
    """The rows of ``images`` that the split files under ``splits_dir`` name; a named image that is not
    in the listing is an error listing the first 20 and the count."""
    from attrib.data.catalog import CatalogError
    from attrib.data.genimage import genimage_key

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


__all__ = ["Split", "SplitRows", "SplitError", "SplitSource", "SampledSplits", "PoseSplits", "builtin_splits",
           "check_split", "load_split_file", "select_splits", "split_rows", "find_pose_files", "read_pose_file",
           "restrict_to_pose"]
