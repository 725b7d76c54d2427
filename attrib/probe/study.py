"""Studies: sweep splits x layers x heads x scores x shots x seeds over one feature set.

Every finished (split, layer, head, score, shots, seed, protocol) becomes one JSON line in
``results.jsonl``, appended as soon as it is known (with ``--jobs N``: when its job ends), so an
interrupted study resumes without redoing finished lines (a line torn by a kill is cut off and redone).

Why the work is cut into (split, layer, shots, seed) jobs: those are independent and each needs one
feature matrix, while the heads and scores of a job share it (and the scores share the fitted head). The
blocks a study needs are read from the HDF5 cache once into per-block float32 ``.npy`` files in a
temporary folder; jobs open them memory-mapped, so ``--jobs N`` processes share one copy in the page
cache instead of each reading and holding its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from attrib import __version__
from attrib.data.splits import Split, SplitRows, SplitSource
from attrib.output_paths import make_folder
from attrib.probe.heads import HEADS, ProbeHead
from attrib.probe.metrics import evaluate
from attrib.probe.persist import check_head_folder
from attrib.probe.protocol import (PROTOCOLS, Selection, SelectionError, best_index, fit_candidates,
                                   path_values, select_clean, select_paper)
from attrib.probe.scorers import SCORERS
from attrib.probe.shots import shots_notes
from attrib.store import FeatureSet, identity_hash

RESULTS = "results.jsonl"
DEFAULT_TPR = 0.95


class StudyError(ValueError):
    """A study option that cannot be satisfied; the message names the option and the valid values."""


# ----------------------------------------------------------------------------------------- options
def parse_layers(spec: str, n_blocks: int) -> list[tuple[int, ...]]:
    """Layer spec -> list of block tuples (one tuple = one feature vector).

    ``all`` | ``8`` | ``6-10`` | ``2,5,8`` | ``concat:9,10,11`` | ``concat:9-11``; several specs join
    with ``;`` (``all;concat:9,10,11``). Blocks are 0-based; a negative index counts from the end.
    """
    usage = "use all, N, A-B, A,B,C or concat:A,B,C (0-based blocks), joined with ';'"

    def block(tok: str) -> int:
        try:
            v = int(tok)
        except ValueError:
            raise StudyError(f"--layers {spec!r}: {tok!r} is not a block number; {usage}") from None
        if not -n_blocks <= v < n_blocks:
            raise StudyError(f"--layers {spec!r}: block {v} out of range 0..{n_blocks - 1}")
        return v % n_blocks

    def blocks(part: str) -> list[int]:
        out = []
        for tok in (t.strip() for t in part.split(",")):
            m = re.fullmatch(r"(\d+)-(\d+)", tok)
            if m:
                lo, hi = block(m.group(1)), block(m.group(2))
                if lo > hi:
                    raise StudyError(f"--layers {spec!r}: empty range {tok}")
                out.extend(range(lo, hi + 1))
            else:
                out.append(block(tok))
        return out

    out: list[tuple[int, ...]] = []
    for part in (p.strip() for p in spec.split(";")):
        if part == "all":
            out.extend((i,) for i in range(n_blocks))
        elif part.startswith("concat:"):
            cat = blocks(part[len("concat:"):])
            if len(set(cat)) != len(cat):
                raise StudyError(f"--layers {spec!r}: a block repeats in {part}")
            out.append(tuple(cat))
        elif part:
            out.extend((b,) for b in blocks(part))
    if not out:
        raise StudyError(f"--layers {spec!r}: no layers; {usage}")
    return list(dict.fromkeys(out))


def layer_name(layer: Sequence[int]) -> str:
    return str(layer[0]) if len(layer) == 1 else "concat:" + ",".join(map(str, layer))


def parse_layer_name(name: str) -> tuple[int, ...]:
    return tuple(int(b) for b in name[len("concat:"):].split(",")) if name.startswith("concat:") else (int(name),)


def parse_grid(specs: Iterable[str]) -> dict[str, list]:
    """``C=0.01,1,100`` / ``k=1,5,10`` (repeatable) -> {param: values}; overrides a head's default path."""
    grid: dict[str, list] = {}
    for spec in specs:
        name, sep, vals = spec.partition("=")
        name = name.strip()
        if not sep or not name or not vals.strip():
            raise StudyError(f"--grid {spec!r}: use NAME=V1,V2,... e.g. C=0.01,1,100 or k=1,5,10")
        out = []
        for tok in vals.split(","):
            tok = tok.strip()
            try:
                out.append(int(tok) if re.fullmatch(r"[+-]?\d+", tok) else float(tok))
            except ValueError:
                raise StudyError(f"--grid {spec!r}: {tok!r} is not a number") from None
        grid[name] = out
    return grid


def shots_name(shots: int | None) -> str:
    return "all" if shots is None else str(shots)


@dataclass
class StudyConfig:
    splits: SplitSource
    layers: list[tuple[int, ...]]
    heads: list[str] = field(default_factory=lambda: ["logreg"])
    scores: list[str] = field(default_factory=lambda: ["msp"])
    shots: list[int | None] = field(default_factory=lambda: [None])
    seeds: int = 1
    protocol: str = "clean"
    grid: dict[str, list] = field(default_factory=dict)
    jobs: int = 1
    tpr: float = DEFAULT_TPR

    def validate(self) -> None:
        self.heads, self.scores = list(dict.fromkeys(self.heads)), list(dict.fromkeys(self.scores))
        self.layers, self.shots = list(dict.fromkeys(self.layers)), list(dict.fromkeys(self.shots))
        if self.protocol not in PROTOCOLS:
            raise StudyError(f"--protocol {self.protocol!r}: use one of {', '.join(PROTOCOLS)}")
        for opt, names, registry in (("--heads", self.heads, HEADS), ("--scores", self.scores, SCORERS)):
            bad = [n for n in names if n not in registry]
            if bad or not names:
                raise StudyError(f"{opt}: {', '.join(bad) or 'nothing'} not available; available: "
                                 f"{', '.join(registry)}")
        params = {HEADS[h].path_param for h in self.heads}
        bad = [p for p in self.grid if p not in params]
        if bad:
            raise StudyError(f"--grid {', '.join(bad)}: no chosen head sweeps it (the heads sweep: "
                             f"{', '.join(sorted(p for p in params if p)) or 'nothing'})")
        for h in self.heads:  # a bad value would fail every line of the study, one by one
            param = HEADS[h].path_param
            if param in self.grid:
                try:
                    HEADS[h].check_path(self.grid[param])
                except ValueError as exc:
                    raise StudyError(f"--grid {param}={','.join(map(str, self.grid[param]))}: {exc}") from None
        if self.seeds < 1:
            raise StudyError("--seeds must be at least 1")
        if self.jobs == 0 or self.jobs < -1:
            raise StudyError(f"--jobs {self.jobs}: use a positive number of processes, or -1 for all CPUs")
        if any(s is not None and s < 1 for s in self.shots) or not self.shots:
            raise StudyError("--shots: use positive integers and 'all'")

    def pairs(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(supported, skipped) (head, score) pairs: a scorer that cannot read a head is skipped."""
        ok, skipped = [], []
        for h in self.heads:
            probe = HEADS[h]()
            for s in self.scores:
                (ok if SCORERS[s].supports(probe) else skipped).append((h, s))
        return ok, skipped


def expand_names(spec: str, registry: dict) -> list[str]:
    """``a,b`` -> [a, b]; ``all`` -> every registered name."""
    names = [t.strip() for t in spec.split(",") if t.strip()]
    return list(registry) if names == ["all"] else list(dict.fromkeys(names))


# --------------------------------------------------------------------------------- data of a job
def shots_subset(y: np.ndarray, shots: int | None, seed: int) -> np.ndarray:
    """Positions of a per-class training subset of ``shots`` images (all of them for ``None``).

    The subset depends only on the labels, ``shots`` and ``seed``, so it is identical across heads and
    layers; and it is nested (the 5-shot subset is inside the 10-shot one) because every class is
    permuted once per seed and the first ``shots`` are taken, which keeps the shots curve smooth.
    """
    if shots is None:
        return np.arange(len(y))
    keep = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng = np.random.default_rng([seed, int(c), 0x5107])
        keep.append(idx[rng.permutation(len(idx))[:shots]])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def rows_digest(rows: SplitRows) -> str:
    """Fingerprint of a split's rows and labels: results made from other rows must not be mixed in."""
    h = hashlib.sha256()
    for name in ("train", "y_train", "val", "y_val", "test", "y_test", "val_unknown", "test_unknown"):
        h.update(np.ascontiguousarray(getattr(rows, name), dtype=np.int64).tobytes())
        h.update(b"|")
    h.update("\0".join(map(str, rows.test_unknown_source)).encode())
    return h.hexdigest()[:16]


class FeatureCache:
    """The blocks a study needs, for the rows it needs, as float32 ``.npy`` files opened memory-mapped.

    Pickles as folder + row index (a few MB at most), so parallel jobs share the arrays through the page
    cache instead of receiving copies.
    """

    def __init__(self, folder: Path, rows: np.ndarray, blocks: dict[int, str]):
        self.folder, self.rows, self.paths = folder, rows, blocks

    @classmethod
    def build(cls, fs: FeatureSet, rows: np.ndarray, blocks: Iterable[int], folder: Path,
              progress: bool = False) -> "FeatureCache":
        from tqdm import tqdm

        rows = np.unique(np.asarray(rows, dtype=np.int64))
        paths = {}
        for b in tqdm(sorted(set(blocks)), desc="read features", unit="block", disable=not progress,
                      leave=False):
            path = folder / f"block-{b:03d}.npy"
            mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(rows), fs.width))
            mm[:] = fs.block(b, rows)
            mm.flush()
            del mm
            paths[b] = str(path)
        return cls(folder, rows, paths)

    def take(self, layer: Sequence[int], rows: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.rows, rows)
        if len(rows) and (pos.max() >= len(self.rows) or not np.array_equal(self.rows[pos], rows)):
            raise StudyError("internal: rows requested that were not read into the feature cache")
        parts = [np.load(self.paths[b], mmap_mode="r")[pos] for b in layer]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


@contextlib.contextmanager
def feature_cache(fs: FeatureSet, rows: np.ndarray, blocks: Iterable[int], progress: bool = False):
    """A :class:`FeatureCache` in a temporary folder (``$TMPDIR``), removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="attrib-features-"))
    try:
        yield FeatureCache.build(fs, rows, blocks, tmp, progress)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def counted_warnings():
    """Count warnings by class instead of printing them (e.g. lbfgs stopping at max_iter for a large
    C, dozens of times per study): they go into the result line, the console stays readable."""
    counts: Counter = Counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield counts
    counts.update(type(w.message).__name__ for w in caught)


# ------------------------------------------------------------------------------------------- a job
@dataclass
class Job:
    """One (split, layer, shots, seed) and the (head, score) lines still missing for it."""

    split: Split
    rows: SplitRows
    layer: tuple[int, ...]
    shots: int | None
    seed: int
    todo: list[tuple[str, str]]
    protocol: str
    grid: dict[str, list]
    tpr: float
    meta: dict[str, Any]
    # The classes travel with the job (pickled by reference), so heads or scores registered at run time
    # (plugins, tests) also work in worker processes, whose registries only hold the built-in ones.
    head_classes: dict[str, type] = field(default_factory=dict)
    scorer_classes: dict[str, type] = field(default_factory=dict)

    def key(self, head: str, score: str) -> tuple:
        return (self.split.name, layer_name(self.layer), head, score, shots_name(self.shots), self.seed,
                self.protocol)


def _jsonable(x: Any) -> Any:
    """Plain JSON: numpy scalars to Python, NaN/inf to null (strict JSON has no NaN)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return str(x)


def _path_summary(head_cls: type[ProbeHead], values: list | None) -> dict[str, Any] | None:
    if head_cls.path_param is None or values is None:
        return None
    return {"param": head_cls.path_param, "n": len(values), "min": min(values), "max": max(values),
            "sha": hashlib.sha256(json.dumps(_jsonable(values)).encode()).hexdigest()[:12]}


def _params(est: Any, drop: Iterable[str] = ("head",)) -> dict[str, Any]:
    return _jsonable({k: v for k, v in est.get_params(deep=False).items() if k not in set(drop)})


def run_job(job: Job, cache: FeatureCache,
            emit: Callable[[dict], None] | None = None) -> tuple[list[dict], list[str]]:
    """Fit, select, score and measure every missing line of ``job``; (lines, error messages).

    With ``emit``, each line is handed to it as soon as it is computed (and not returned): in the
    writing process, that appends it to ``results.jsonl`` at once, so a kill loses no finished line.
    """
    t0 = time.perf_counter()
    rows, sp = job.rows, job.split
    keep = shots_subset(rows.y_train, job.shots, job.seed)
    y_tr = rows.y_train[keep]
    X = {name: cache.take(job.layer, r) for name, r in (
        ("train", rows.train[keep]), ("val", rows.val), ("test", rows.test),
        ("val_unknown", rows.val_unknown), ("test_unknown", rows.test_unknown))}
    t_read = time.perf_counter() - t0
    labels = np.arange(len(sp.classes))
    train_digest = hashlib.sha256(np.ascontiguousarray(rows.train[keep], dtype=np.int64).tobytes()).hexdigest()[:16]
    n = {**rows.sizes(), "train": int(len(keep)),
         "train_per_class": {sp.classes[c]: int(np.sum(y_tr == c)) for c in labels}}
    lines: list[dict] = []
    errors: list[str] = []
    emit = emit or lines.append
    head_free: dict[str, Any] = {}  # scorers that ignore the head: fitted once per job, for every head

    def fit_scorer(score_name: str, head: ProbeHead) -> Any:
        scorer_cls = job.scorer_classes[score_name]
        if scorer_cls.needs_head:
            return scorer_cls(head=head).fit(X["train"], y_tr)
        if score_name not in head_free:
            head_free[score_name] = scorer_cls(head=None).fit(X["train"], y_tr)
        return head_free[score_name]

    for head_name in dict.fromkeys(h for h, _ in job.todo):
        head_cls = job.head_classes[head_name]
        values = path_values(head_cls, job.grid)
        t1 = time.perf_counter()
        try:
            with counted_warnings() as fit_warnings:
                cands = fit_candidates(head_cls, X["train"], y_tr, X["val"], rows.y_val, values)
        except Exception as exc:  # noqa: BLE001 - one failing head must not end a long study
            errors.append(f"split {sp.name} layer {layer_name(job.layer)} head {head_name}: fitting failed: "
                          f"{type(exc).__name__}: {exc}")
            continue
        t_fit = time.perf_counter() - t1
        clean = select_clean(cands, head_cls.path_param) if job.protocol == "clean" else None
        for score_name in (s for h, s in job.todo if h == head_name):
            t2 = time.perf_counter()
            try:
                make = lambda head: fit_scorer(score_name, head)  # noqa: E731
                sel: Selection = clean if clean is not None else select_paper(
                    cands, head_cls.path_param, make, X["val"], X["val_unknown"])
                t3 = time.perf_counter()
                scorer = make(sel.head)
                pred_known = sel.head.predict(X["test"])
                s_known = scorer.score_samples(X["test"])
                if len(rows.test_unknown):
                    pred_unknown = sel.head.predict(X["test_unknown"])
                    s_unknown = scorer.score_samples(X["test_unknown"])
                else:  # a split without unknown generators: open-set metrics are nan
                    pred_unknown, s_unknown = np.zeros(0, dtype=np.int64), np.zeros(0)
                t4 = time.perf_counter()
                metrics = evaluate(rows.y_test, pred_known, s_known, s_unknown, pred_unknown,
                                   rows.test_unknown_source, labels, sp.classes, job.tpr)
            except SelectionError:
                raise
            except Exception as exc:  # noqa: BLE001
                errors.append(f"split {sp.name} layer {layer_name(job.layer)} {head_name}+{score_name}: "
                              f"{type(exc).__name__}: {exc}")
                continue
            t5 = time.perf_counter()
            split_name, layer, _, _, shots, seed, protocol = job.key(head_name, score_name)
            emit(_jsonable({
                "feature_set": job.meta["feature_set"], "feature_hash": job.meta["feature_hash"],
                "label": job.meta["label"], "split": split_name,
                "layer": layer, "head": head_name, "score": score_name, "shots": shots, "seed": seed,
                "protocol": protocol, "hparams": sel.hparams, "selection": sel.summary(), **metrics,
                "classes": list(sp.classes), "known": list(sp.known), "unknown": list(sp.unknown), "n": n,
                "rows": job.meta["rows"], "train_rows": train_digest,
                "warnings": dict(fit_warnings),
                "config": {"path": _path_summary(head_cls, values), "head_params": _params(sel.head),
                           "score_params": _params(scorer), "tpr": job.tpr},
                "seconds": {"read": round(t_read, 4), "fit_path": round(t_fit, 4),
                            "select": round(t3 - t2, 4), "score": round(t4 - t3, 4),
                            "metrics": round(t5 - t4, 4)},
                "attrib": __version__,
            }))
    return lines, errors


# ----------------------------------------------------------------------------------- results file
def line_key(d: dict[str, Any]) -> tuple:
    return (str(d["split"]), str(d["layer"]), d["head"], d["score"], str(d["shots"]), int(d["seed"]),
            d.get("protocol", "clean"))


def _repair_tail(path: Path) -> int:
    """Cut a last line torn by a kill (no trailing newline); returns the bytes removed."""
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return 0
        size = f.seek(0, os.SEEK_END)
        pos, chunk = size, 1 << 16
        while pos > 0:  # find the last newline, reading backwards
            start = max(0, pos - chunk)
            f.seek(start)
            i = f.read(pos - start).rfind(b"\n")
            if i >= 0:
                cut = start + i + 1
                break
            pos = start
        else:
            cut = 0
        f.truncate(cut)
        return size - cut


def read_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every result line of ``path`` (a results folder or file). A torn last line (a study killed, or
    still running) is ignored; any other unreadable line is an error naming it."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS
    if not path.exists():
        raise StudyError(f"{path}: no results yet; run `attrib probe ... --out {path.parent}` first")
    data = path.read_bytes()
    lines = data.split(b"\n")
    out = []
    for i, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            d = json.loads(raw)
            line_key(d)
        except (ValueError, KeyError, TypeError) as exc:
            if i == len(lines):  # no newline after it: torn, redone by the next `attrib probe`
                continue
            raise StudyError(f"{path}:{i}: not a result line ({exc}); delete that line (a rerun of "
                             "`attrib probe` redoes it)") from None
        out.append(d)
    return out


def _check_compatible(existing: list[dict], fs: FeatureSet, digests: dict[tuple[str, int], str],
                      paths: dict[str, Any], results: Path) -> None:
    """Refuse to append results that could not be aggregated with those already in the file."""
    problems = []
    ident = identity_hash(fs.manifest)
    other_fs = sorted({f"{d['feature_set']} ({d.get('feature_hash', '?')})" for d in existing
                       if d["feature_set"] != fs.id or d.get("feature_hash", ident) != ident})
    if other_fs:
        problems.append(f"it holds results of feature set {', '.join(other_fs)}, not {fs.id} ({ident})")
    seen = set()
    for d in existing:
        k = (str(d["split"]), int(d["seed"]))
        if k in digests and d.get("rows") not in (None, digests[k]) and k not in seen:
            seen.add(k)
            problems.append(f"split {k[0]} seed {k[1]} had other rows (split definition or --*-per-class "
                            "changed)")
        h = d["head"]
        old = (d.get("config") or {}).get("path")
        if h in paths and old and paths[h] and old.get("sha") != paths[h]["sha"] and ("grid", h) not in seen:
            seen.add(("grid", h))
            problems.append(f"head {h} was swept over another {old['param']} grid ({old['n']} values "
                            f"{old['min']:g}..{old['max']:g})")
    if problems:
        raise StudyError(f"{results} cannot take these results: " + "; ".join(problems) +
                         ". Use another --out folder (or delete that file to start over).")


@dataclass
class StudyRun:
    results: Path
    written: int = 0
    skipped_done: int = 0
    errors: list[str] = field(default_factory=list)
    skipped_pairs: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


@contextlib.contextmanager
def _exclusive(out_dir: Path):
    """One study at a time per results folder: two writers would duplicate and interleave lines."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    with open(out_dir / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise StudyError(f"another `attrib probe` is writing to {out_dir}; wait for it or use another "
                             "--out") from None
        yield


def run_study(fs: FeatureSet, cfg: StudyConfig, out_dir: str | os.PathLike, progress: bool = True,
              log: Callable[[str], None] = _stderr) -> StudyRun:
    """Run every missing line of the study into ``out_dir/results.jsonl``."""
    cfg.validate()
    out_dir = make_folder(out_dir, "--out", StudyError)
    with _exclusive(out_dir):
        return _run_study(fs, cfg, out_dir, progress, log)


def _run_study(fs: FeatureSet, cfg: StudyConfig, out_dir: Path, progress: bool,
               log: Callable[[str], None]) -> StudyRun:
    from joblib import Parallel, delayed
    from tqdm import tqdm

    t0 = time.perf_counter()
    results = out_dir / RESULTS
    run = StudyRun(results)
    torn = _repair_tail(results)
    if torn:
        log(f"{results}: cut a torn last line ({torn} bytes) left by an interrupted run; it is redone")
    existing = read_results(results) if results.exists() else []
    done = {line_key(d) for d in existing}

    pairs, run.skipped_pairs = cfg.pairs()
    if run.skipped_pairs:
        log("skipped (score cannot use this head): " + ", ".join(f"{h}+{s}" for h, s in run.skipped_pairs))
    if not pairs:
        raise StudyError("no (head, score) pair is supported: choose other --heads / --scores")
    meta = {"feature_set": fs.id, "feature_hash": identity_hash(fs.manifest), "label": fs.label}
    rows_of: dict[tuple[str, int], SplitRows] = {
        (name, seed): cfg.splits.rows(name, seed) for name in cfg.splits.names() for seed in range(cfg.seeds)}
    digests = {key: rows_digest(rows) for key, rows in rows_of.items()}
    paths = {h: _path_summary(HEADS[h], path_values(HEADS[h], cfg.grid)) for h in cfg.heads}
    _check_compatible(existing, fs, digests, paths, results)
    if cfg.protocol == "paper":
        for (name, seed), rows in rows_of.items():
            if not len(rows.val_unknown):
                raise StudyError(f"--protocol paper: split {name} has no validation images of its unknown "
                                 "generators; use --protocol clean")

    splits = {name: cfg.splits.split(name) for name in cfg.splits.names()}
    for note in shots_notes(cfg.shots, rows_of):  # a shots value some class cannot fill
        log(f"note: {note}")
    head_classes, scorer_classes = {h: HEADS[h] for h in cfg.heads}, {s: SCORERS[s] for s in cfg.scores}
    jobs = []
    for name, layer, shots, seed in itertools.product(splits, cfg.layers, cfg.shots, range(cfg.seeds)):
        job = Job(splits[name], rows_of[(name, seed)], layer, shots, seed, [], cfg.protocol, cfg.grid, cfg.tpr,
                  {**meta, "rows": digests[(name, seed)]}, head_classes, scorer_classes)
        job.todo = [p for p in pairs if job.key(*p) not in done]
        run.skipped_done += len(pairs) - len(job.todo)
        if job.todo:
            jobs.append(job)
    if not jobs:
        run.seconds = time.perf_counter() - t0
        return run

    needed = np.concatenate([np.concatenate([j.rows.train, j.rows.val, j.rows.test, j.rows.val_unknown,
                                             j.rows.test_unknown]) for j in jobs])
    blocks = {b for j in jobs for b in j.layer}
    with feature_cache(fs, needed, blocks, progress) as cache:
        bar = tqdm(total=len(jobs), desc="probe", unit="job", disable=not progress)
        with open(results, "a") as out:
            def write(line: dict) -> None:
                out.write(json.dumps(line, allow_nan=False) + "\n")
                out.flush()
                run.written += 1

            if cfg.jobs == 1:  # in this process: every line is written the moment it is computed
                done_jobs = (run_job(j, cache, write) for j in jobs)
            else:  # a worker's lines come back when its whole job is done
                tasks = (delayed(run_job)(j, cache) for j in jobs)
                done_jobs = Parallel(n_jobs=cfg.jobs, return_as="generator_unordered")(tasks)
            for lines, errors in done_jobs:
                for line in lines:
                    write(line)
                run.errors.extend(errors)
                bar.update()
        bar.close()
    run.seconds = time.perf_counter() - t0
    return run


# --------------------------------------------------------------------------------- a head to keep
def check_save_head(cfg: StudyConfig, folder: str | os.PathLike) -> None:
    """Refuse what :func:`save_chosen_head` could not do (several splits, a folder that cannot be
    written): the command line calls it before the study, which may take hours, not after."""
    names = cfg.splits.names()
    if len(names) != 1:
        raise StudyError(f"--save-head: a saved head knows the classes of one split; name it with --splits "
                         f"(this study has splits {', '.join(names)})")
    check_head_folder(folder)


def save_chosen_head(fs: FeatureSet, cfg: StudyConfig, folder: str | os.PathLike, progress: bool = False,
                     log: Callable[[str], None] = _stderr) -> dict[str, Any]:
    """Choose a (layer, head, score) under the clean protocol, fit it, and save it to ``folder``.

    Known-class data only, on the study's single split, seed 0, and its largest shots value:

    - each head's path value: the clean rule (validation accuracy, then log-loss);
    - among several layers / heads / scores: the highest *pseudo-open-set* validation OSCR (each known
      generator in turn hidden from training and used as the unknown; see
      :func:`attrib.probe.protocol.pseudo_open_set_oscr`), ties broken by validation accuracy, then
      log-loss, then the order given. With a single candidate nothing is compared.
    - the rejection threshold: the score accepting ``cfg.tpr`` (95%) of the known validation images.

    Returns a summary of the choice (also stored in ``head.json``).
    """
    from sklearn.base import clone

    from attrib.probe.metrics import auroc, threshold_at_tpr
    from attrib.probe.persist import save_head
    from attrib.probe.protocol import pseudo_folds, pseudo_open_set_oscr

    cfg.validate()
    check_save_head(cfg, folder)
    names = cfg.splits.names()
    if cfg.protocol != "clean":
        log("--save-head always chooses under the clean protocol (no unknown generator is looked at)")
    sp = cfg.splits.split(names[0])
    shots = None if None in cfg.shots else max(cfg.shots)
    seed = 0
    rows = cfg.splits.rows(sp.name, seed)
    keep = shots_subset(rows.y_train, shots, seed)
    y_tr, tr_rows = rows.y_train[keep], rows.train[keep]
    pairs, _ = cfg.pairs()
    if not pairs:
        raise StudyError("--save-head: no (head, score) pair is supported: choose other --heads / --scores")
    n_cand = len(cfg.layers) * len(pairs)
    folds = pseudo_folds(y_tr) if n_cand > 1 else []
    if n_cand > 1 and not folds:
        log("--save-head: fewer than two known generators, so no pseudo-unknown can be held out; choosing "
            "by validation accuracy only (name one --scores to choose the score yourself)")
    table, fitted = [], {}
    blocks = {b for layer in cfg.layers for b in layer}
    with feature_cache(fs, np.concatenate([tr_rows, rows.val, rows.val_unknown]), blocks, progress) as cache:
        for layer in cfg.layers:
            X_tr, X_va = cache.take(layer, tr_rows), cache.take(layer, rows.val)
            for head_name in dict.fromkeys(h for h, _ in pairs):
                head_cls = HEADS[head_name]
                with counted_warnings() as caught:
                    sel = select_clean(fit_candidates(head_cls, X_tr, y_tr, X_va, rows.y_val,
                                                      path_values(head_cls, cfg.grid)), head_cls.path_param)
                fitted[(layer, head_name)] = sel
                score_names = [s for h, s in pairs if h == head_name]
                pseudo_oscr = {}
                if folds:
                    with counted_warnings() as caught_folds:
                        pseudo_oscr = pseudo_open_set_oscr(
                            lambda: clone(sel.head), {s: (lambda hd, s=s: SCORERS[s](head=hd)) for s in score_names},
                            X_tr, y_tr, X_va, rows.y_val, folds)
                    caught += caught_folds
                for score_name in score_names:
                    entry = {"layer": layer_name(layer), "head": head_name, "score": score_name,
                             "hparams": sel.hparams, "val_accuracy": sel.val["val_accuracy"],
                             "val_logloss": sel.val["val_logloss"]}
                    if folds:
                        entry["pseudo_oscr"] = pseudo_oscr[score_name]
                    entry["warnings"] = dict(caught)
                    table.append(entry)
        keys = [(e.get("pseudo_oscr", 0.0), e["val_accuracy"], -e["val_logloss"]) for e in table]
        best = table[best_index(keys)]
        layer = parse_layer_name(best["layer"])
        sel = fitted[(layer, best["head"])]
        X_tr, X_va = cache.take(layer, tr_rows), cache.take(layer, rows.val)
        scorer = SCORERS[best["score"]](head=sel.head).fit(X_tr, y_tr)
        s_val = scorer.score_samples(X_va)
        threshold = threshold_at_tpr(s_val, cfg.tpr)
        validation = {"accuracy": sel.val["val_accuracy"], "tpr": float(np.mean(s_val >= threshold)),
                      "n_known": int(len(rows.val))}
        if len(rows.val_unknown):  # reported for information, never used to choose
            s_vu = scorer.score_samples(cache.take(layer, rows.val_unknown))
            validation.update(unknown_rejected=float(np.mean(s_vu < threshold)), auroc=auroc(s_val, s_vu),
                              n_unknown=int(len(rows.val_unknown)))
        criterion = ("pseudo_open_set_oscr" if folds else "val_accuracy") if n_cand > 1 else "given"
        summary = _jsonable({
            "protocol": "clean", "layer": best["layer"], "head": best["head"], "score": best["score"],
            "hparams": sel.hparams, "selection": sel.summary(), "threshold": threshold, "tpr": cfg.tpr,
            "split": {"name": sp.name, "known": list(sp.known), "unknown": list(sp.unknown),
                      "rows": rows_digest(rows)},
            "shots": shots_name(shots), "seed": seed, "n_train": int(len(tr_rows)), "validation": validation,
            "choice": {"criterion": criterion, "pseudo_unknown": [sp.classes[g] for g in folds],
                       "candidates": table},
        })
        save_head(folder, sel.head, scorer, head_name=best["head"], score_name=best["score"],
                  classes=[sp.classes[c] for c in np.asarray(sel.head.classes_).tolist()], layer=layer,
                  threshold=threshold, feature_set=fs.id, manifest=fs.manifest, check_X=X_va[:8],
                  info={k: v for k, v in summary.items() if k not in ("threshold", "layer", "head", "score")})
    return summary
