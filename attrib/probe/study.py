"""Studies: sweep splits x layers x heads x scores x shots x seeds over one feature set.

Every finished (split, layer, head, score, shots, seed, protocol, ``--param`` settings) becomes one JSON
line in ``results.jsonl`` (:mod:`attrib.probe.results`), appended as soon as it is known (with ``--jobs
N``: when its job ends), so an interrupted study resumes without redoing finished lines.

With evaluation features (``eval_fs``: ``attrib probe --eval-features``), split rows are drawn from the
training features' image list and the validation and test rows are read from ``eval_fs``, matched by
image (:mod:`attrib.probe.evalrows`).

Why the work is cut into (split, layer, shots, seed) jobs: those are independent and each needs one
feature matrix, while the heads and scores of a job share it (and the scores share the fitted head). The
blocks a study needs are read once into a :class:`~attrib.probe.featcache.FeatureCache` that the jobs
(and their worker processes) share.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from attrib import __version__
from attrib.data.splits import Split, SplitRows, SplitSource
from attrib.jsonio import dumps, to_jsonable
from attrib.output_paths import make_folder
from attrib.probe.evalrows import EVAL_PARTS, EvalRows, feature_ids
from attrib.probe.featcache import FeatureCache, feature_cache
from attrib.probe.heads import HEADS, ProbeHead
from attrib.probe.metrics import evaluate
from attrib.probe.options import StudyError, layer_name, shots_name
from attrib.probe.params import Setting, line_params, params_key, resolve_params
from attrib.probe.protocol import (BALANCE, PROTOCOLS, Selection, SelectionError, fit_candidates, path_values,
                                   select_clean, select_paper, training_positions)
from attrib.probe.results import RESULTS, appending, check_compatible, exclusive, line_key, read_results, repair_tail
from attrib.probe.scorefile import write_scores
from attrib.probe.scorers import SCORERS
from attrib.probe.shots import shots_notes
from attrib.store import FeatureSet, identity_hash

DEFAULT_TPR = 0.95
BACKENDS = ("local", "dask")


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
    backend: str = "local"  # local: --jobs processes on this machine; dask: the workers of --scheduler
    scheduler: str | None = None
    scratch: str | None = None  # where the per-block feature cache goes (shared storage for a cluster)
    params: list[Setting] = field(default_factory=list)  # --param NAME.KEY=VALUE, parsed
    save_scores: bool = False

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
        self._validate_grid()
        head_params = self.estimator_params()[0]
        for h in self.heads:  # like a bad --grid value, a setting the machine cannot run fails up front
            try:
                HEADS[h](**head_params.get(h, {})).check_params()
            except ValueError as exc:
                raise StudyError(f"--param for {h}: {exc}") from None
        if self.seeds < 1:
            raise StudyError("--seeds must be at least 1")
        if self.jobs == 0 or self.jobs < -1:
            raise StudyError(f"--jobs {self.jobs}: use a positive number of processes, or -1 for all CPUs")
        if self.backend not in BACKENDS:
            raise StudyError(f"--backend {self.backend!r}: use one of {', '.join(BACKENDS)}")
        if (self.backend == "dask") != (self.scheduler is not None):
            raise StudyError("--backend dask needs --scheduler ADDRESS (e.g. tcp://head-node:8786), and "
                             "--scheduler is only for --backend dask")
        if any(s is not None and s < 1 for s in self.shots) or not self.shots:
            raise StudyError("--shots: use positive integers and 'all'")

    def _validate_grid(self) -> None:
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

    def estimator_params(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """(head_params, score_params) of ``--param``, by head / score name (checked: see resolve_params)."""
        return resolve_params(self.params, self.heads, self.scores, HEADS, SCORERS)

    def pairs(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(supported, skipped) (head, score) pairs: a scorer that cannot read a head is skipped."""
        ok, skipped = [], []
        for h in self.heads:
            probe = HEADS[h]()
            for s in self.scores:
                (ok if SCORERS[s].supports(probe) else skipped).append((h, s))
        return ok, skipped


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
    if rows.split.groups:  # regrouped unknowns give other `groups` metrics (ungrouped digests unchanged)
        h.update(repr(rows.split.groups).encode())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def counted_warnings() -> Iterator[Counter]:
    """Count warnings by class instead of printing them (e.g. lbfgs stopping at max_iter for a large
    C, dozens of times per study): they go into the result line, the console stays readable."""
    counts: Counter = Counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield counts
    counts.update(type(w.message).__name__ for w in caught)


def path_summary(head_cls: type[ProbeHead], values: list | None) -> dict[str, Any] | None:
    """The path a head was swept over, as result lines record it (``config.path``)."""
    if head_cls.path_param is None or values is None:
        return None
    return {"param": head_cls.path_param, "n": len(values), "min": min(values), "max": max(values),
            "sha": hashlib.sha256(dumps(to_jsonable(values)).encode()).hexdigest()[:12]}


def _params(est: Any, drop: Iterable[str] = ("head",)) -> dict[str, Any]:
    return to_jsonable({k: v for k, v in est.get_params(deep=False).items() if k not in set(drop)})


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
    head_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # --param, by head name
    score_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # --param, by score name
    # --save-scores: the results folder, and the image paths of the known and unknown test rows
    scores_dir: str | None = None
    test_paths: tuple[np.ndarray, np.ndarray] | None = None
    # ``rows`` with validation and test rows of the evaluation features (--eval-features); None: ``rows``
    eval_rows: SplitRows | None = None

    def params(self, head: str, score: str) -> dict[str, Any]:
        """The ``--param`` settings of one (head, score) line, ``{"NAME.KEY": value}``."""
        return line_params(head, score, self.head_params, self.score_params)

    @property
    def evaluated(self) -> SplitRows:
        """The rows validation and test features are read by (:meth:`FeatureCache.take_eval`)."""
        return self.rows if self.eval_rows is None else self.eval_rows

    def key(self, head: str, score: str) -> tuple:
        return (self.split.name, layer_name(self.layer), head, score, shots_name(self.shots), self.seed,
                self.protocol, params_key(self.params(head, score)))

    def where(self) -> str:
        """How error messages name the job."""
        return f"split {self.split.name} layer {layer_name(self.layer)}"


@dataclass
class JobData:
    """A job's feature matrices and what every one of its lines records about its training data.

    ``X["train"]`` / ``y_train`` are the rows heads and scorers are fitted on: the shots subset, balanced
    by cycling under the paper protocol (:func:`attrib.probe.protocol.training_positions`). ``n["train"]``
    and ``n["train_per_class"]`` count distinct images, ``n["train_fitted"]`` the rows fitted.
    """

    X: dict[str, np.ndarray]  # train (its shots subset, balanced if the protocol says so), val, test, ...
    y_train: np.ndarray
    n: dict[str, Any]
    train_rows: str
    seconds_read: float

    @classmethod
    def read(cls, job: Job, cache: FeatureCache) -> "JobData":
        t0 = time.perf_counter()
        rows, sp = job.rows, job.split
        keep = shots_subset(rows.y_train, job.shots, job.seed)
        y_tr = rows.y_train[keep]
        fit = training_positions(y_tr, job.protocol)
        X = {"train": cache.take(job.layer, rows.train[keep][fit])}
        X.update((name, cache.take_eval(job.layer, getattr(job.evaluated, name))) for name in EVAL_PARTS)
        t_read = time.perf_counter() - t0
        digest = hashlib.sha256(np.ascontiguousarray(rows.train[keep], dtype=np.int64).tobytes()).hexdigest()[:16]
        n = {**rows.sizes(), "train": int(len(keep)), "train_fitted": int(len(fit)),
             "train_per_class": {sp.classes[c]: int(np.sum(y_tr == c)) for c in range(len(sp.classes))}}
        return cls(X, y_tr[fit], n, digest, t_read)


def run_job(job: Job, cache: FeatureCache,
            emit: Callable[[dict], None] | None = None) -> tuple[list[dict], list[str]]:
    """Fit, select, score and measure every missing line of ``job``; (lines, error messages).

    With ``emit``, each line is handed to it as soon as it is computed (and not returned): in the
    writing process, that appends it to ``results.jsonl`` at once, so a kill loses no finished line.
    """
    data = JobData.read(job, cache)
    lines: list[dict] = []
    errors: list[str] = []
    emit = emit or lines.append
    fit_scorer = _scorer_fitter(job, data)
    for head_name in dict.fromkeys(h for h, _ in job.todo):
        head_cls = job.head_classes[head_name]
        values = path_values(head_cls, job.grid)
        t1 = time.perf_counter()
        try:
            with counted_warnings() as fit_warnings:
                cands = fit_candidates(head_cls, data.X["train"], data.y_train, data.X["val"], job.rows.y_val, values,
                                       **job.head_params.get(head_name, {}))
        except Exception as exc:  # noqa: BLE001 - one failing head must not end a long study
            errors.append(f"{job.where()} head {head_name}: fitting failed: {type(exc).__name__}: {exc}")
            continue
        t_fit = time.perf_counter() - t1
        clean = select_clean(cands, head_cls.path_param) if job.protocol == "clean" else None
        for score_name in (s for h, s in job.todo if h == head_name):
            make = lambda head, s=score_name: fit_scorer(s, head)  # noqa: E731
            try:
                sel, scorer, test, seconds = _score(job, data, cands, clean, head_cls.path_param, make)
                scores_file = _save_scores(job, head_name, score_name, test) if job.scores_dir else None
            except SelectionError:
                raise
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{job.where()} {head_name}+{score_name}: {type(exc).__name__}: {exc}")
                continue
            config = {"path": path_summary(head_cls, values), "head_params": _params(sel.head),
                      "score_params": _params(scorer), "tpr": job.tpr, "balance": BALANCE[job.protocol],
                      "params": job.params(head_name, score_name)}
            line = _result_line(job, data, head_name, score_name, sel, test.metrics, dict(fit_warnings), config,
                                {"read": round(data.seconds_read, 4), "fit_path": round(t_fit, 4), **seconds})
            emit({**line, "scores_file": scores_file} if scores_file else line)
    return lines, errors


def _scorer_fitter(job: Job, data: JobData) -> Callable[[str, ProbeHead], Any]:
    """``fit(score_name, head)``: a fitted scorer. Scorers that ignore the head are fitted once per job
    and shared by every head."""
    head_free: dict[str, Any] = {}

    def fit(score_name: str, head: ProbeHead) -> Any:
        scorer_cls = job.scorer_classes[score_name]
        params = job.score_params.get(score_name, {})
        if scorer_cls.needs_head:
            return scorer_cls(head=head, **params).fit(data.X["train"], data.y_train)
        if score_name not in head_free:
            head_free[score_name] = scorer_cls(head=None, **params).fit(data.X["train"], data.y_train)
        return head_free[score_name]

    return fit


@dataclass
class ScoredTest:
    """What one (head, score) gives on the test images: per-sample outputs and the metrics of them."""

    pred_known: np.ndarray
    s_known: np.ndarray
    pred_unknown: np.ndarray
    s_unknown: np.ndarray
    metrics: dict[str, Any]


def _score(job: Job, data: JobData, cands: list, clean: Selection | None, param: str | None,
           make: Callable[[ProbeHead], Any]) -> tuple[Selection, Any, ScoredTest, dict[str, float]]:
    """Select the head of one (head, score), score the test images and measure:
    (selection, fitted scorer, test outputs and metrics, seconds of each step)."""
    rows, sp, X = job.rows, job.split, data.X
    t2 = time.perf_counter()
    sel = clean if clean is not None else select_paper(cands, param, make, X["val"], X["val_unknown"])
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
    metrics = evaluate(rows.y_test, pred_known, s_known, s_unknown, pred_unknown, rows.test_unknown_source,
                       np.arange(len(sp.classes)), sp.classes, job.tpr, unknown_groups=rows.unknown_groups())
    t5 = time.perf_counter()
    return sel, scorer, ScoredTest(pred_known, s_known, pred_unknown, s_unknown, metrics), {
        "select": round(t3 - t2, 4), "score": round(t4 - t3, 4), "metrics": round(t5 - t4, 4)}


def _save_scores(job: Job, head: str, score: str, test: ScoredTest) -> str:
    """Write a line's per-sample test outputs (``--save-scores``); returns its ``scores_file``."""
    assert job.scores_dir is not None and job.test_paths is not None
    rows = job.rows
    return write_scores(job.scores_dir, job.key(head, score), classes=job.split.classes, y_true=rows.y_test,
                        y_pred=test.pred_known, s_known=test.s_known, s_unknown=test.s_unknown,
                        pred_unknown=test.pred_unknown, unknown_source=rows.test_unknown_source,
                        paths_known=job.test_paths[0], paths_unknown=job.test_paths[1])


def _result_line(job: Job, data: JobData, head_name: str, score_name: str, sel: Selection,
                 metrics: dict[str, Any], fit_warnings: dict[str, int], config: dict[str, Any],
                 seconds: dict[str, float]) -> dict[str, Any]:
    """One line of ``results.jsonl``, JSON-ready (undefined metrics are null)."""
    sp = job.split
    split_name, layer, _, _, shots, seed, protocol, _ = job.key(head_name, score_name)
    return to_jsonable({
        "feature_set": job.meta["feature_set"], "feature_hash": job.meta["feature_hash"],
        "features": job.meta["features"], "eval_features": job.meta["eval_features"],
        "eval_feature_hash": job.meta["eval_feature_hash"], "label": job.meta["label"], "split": split_name,
        "layer": layer, "head": head_name, "score": score_name, "shots": shots, "seed": seed,
        "protocol": protocol, "hparams": sel.hparams, "selection": sel.summary(), **metrics,
        "classes": list(sp.classes), "known": list(sp.known), "unknown": list(sp.unknown), "n": data.n,
        "rows": job.meta["rows"], "train_rows": data.train_rows,
        "warnings": fit_warnings, "config": config, "seconds": seconds,
        "attrib": __version__,
    })


# ----------------------------------------------------------------------------------------- a study
@dataclass
class StudyRun:
    results: Path
    written: int = 0
    skipped_done: int = 0
    errors: list[str] = field(default_factory=list)
    skipped_pairs: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def stderr_log(msg: str) -> None:
    """The default `log` of a study and of `--save-head`: one line on stderr, apart from the tables on stdout."""
    print(msg, file=sys.stderr)


def run_study(fs: FeatureSet, cfg: StudyConfig, out_dir: str | os.PathLike, progress: bool = True,
              log: Callable[[str], None] = stderr_log, eval_fs: FeatureSet | None = None) -> StudyRun:
    """Run every missing line of the study into ``out_dir/results.jsonl``.

    ``fs`` and ``eval_fs`` are feature sets or unions of several (:class:`attrib.union.FeatureUnion`);
    with ``eval_fs``, validation and test rows are read from it (the module docstring says how).
    """
    cfg.validate()
    out_dir = make_folder(out_dir, "--out", StudyError)
    with exclusive(out_dir):
        t0 = time.perf_counter()
        run = StudyRun(out_dir / RESULTS)
        jobs = _plan(fs, cfg, run, log, eval_fs)
        if jobs:
            _execute(fs, cfg, jobs, run, progress, eval_fs)
        run.seconds = time.perf_counter() - t0
        return run


def study_meta(fs: FeatureSet, eval_fs: FeatureSet | None) -> dict[str, Any]:
    """What every result line of a study records about its features (the training and evaluation sets)."""
    ev = fs if eval_fs is None else eval_fs
    labels = list(dict.fromkeys(lab for lab in (fs.label, ev.label) if lab))
    return {"feature_set": fs.id, "feature_hash": identity_hash(fs.manifest), "label": "; ".join(labels),
            "features": feature_ids(fs), "eval_features": feature_ids(ev),
            "eval_feature_hash": identity_hash(ev.manifest)}


def _plan(fs: FeatureSet, cfg: StudyConfig, run: StudyRun, log: Callable[[str], None],
          eval_fs: FeatureSet | None = None) -> list[Job]:
    """The jobs with lines still missing from ``run.results`` (repaired first), after checking that
    their lines can join those already there."""
    results = run.results
    torn = repair_tail(results)
    if torn:
        log(f"{results}: cut a torn last line ({torn} bytes) left by an interrupted run; it is redone")
    existing = read_results(results) if results.exists() else []
    done = {line_key(d): bool(d.get("scores_file")) for d in existing}  # key -> has saved scores

    pairs, run.skipped_pairs = cfg.pairs()
    if run.skipped_pairs:
        log("skipped (score cannot use this head): " + ", ".join(f"{h}+{s}" for h, s in run.skipped_pairs))
    if not pairs:
        raise StudyError("no (head, score) pair is supported: choose other --heads / --scores")
    meta = study_meta(fs, eval_fs)
    rows_of: dict[tuple[str, int], SplitRows] = {
        (name, seed): cfg.splits.rows(name, seed) for name in cfg.splits.names() for seed in range(cfg.seeds)}
    eval_rows_of = EvalRows(fs, eval_fs).map(rows_of) if eval_fs is not None else {}
    digests = {key: rows_digest(rows) for key, rows in rows_of.items()}
    paths = {h: path_summary(HEADS[h], path_values(HEADS[h], cfg.grid)) for h in cfg.heads}
    check_compatible(existing, meta["feature_set"], meta["feature_hash"], digests, paths, results,
                     eval_features=meta["eval_features"], eval_hash=meta["eval_feature_hash"])
    if cfg.protocol == "paper":
        for (name, _seed), rows in rows_of.items():
            if not len(rows.val_unknown):
                raise StudyError(f"--protocol paper: split {name} has no validation images of its unknown "
                                 "generators; use --protocol clean")

    splits = {name: cfg.splits.split(name) for name in cfg.splits.names()}
    for note in shots_notes(cfg.shots, rows_of):  # a shots value some class cannot fill
        log(f"note: {note}")
    head_classes, scorer_classes = {h: HEADS[h] for h in cfg.heads}, {s: SCORERS[s] for s in cfg.scores}
    head_params, score_params = cfg.estimator_params()
    image_paths = np.asarray(fs.images.paths, dtype=str) if cfg.save_scores else None
    jobs, without_scores = [], 0
    for name, layer, shots, seed in itertools.product(splits, cfg.layers, cfg.shots, range(cfg.seeds)):
        rows = rows_of[(name, seed)]
        job = Job(splits[name], rows, layer, shots, seed, [], cfg.protocol, cfg.grid, cfg.tpr,
                  {**meta, "rows": digests[(name, seed)]}, head_classes, scorer_classes, head_params, score_params,
                  eval_rows=eval_rows_of.get((name, seed)))
        if image_paths is not None:
            job.scores_dir = str(results.parent)
            job.test_paths = (image_paths[rows.test], image_paths[rows.test_unknown])
        job.todo = [p for p in pairs if job.key(*p) not in done]
        run.skipped_done += len(pairs) - len(job.todo)
        without_scores += sum(1 for p in pairs if job.key(*p) in done and not done[job.key(*p)])
        if job.todo:
            jobs.append(job)
    if cfg.save_scores and without_scores:
        log(f"--save-scores: {without_scores} line(s) already in {results} were computed without it and are not "
            "redone; use a new --out to save their scores too")
    return jobs


def _execute(fs: FeatureSet, cfg: StudyConfig, jobs: list[Job], run: StudyRun, progress: bool,
             eval_fs: FeatureSet | None = None) -> None:
    """Run ``jobs`` (in this process, or ``cfg.jobs`` workers) and append their lines to ``run.results``."""
    from joblib import Parallel, delayed
    from tqdm import tqdm

    train = np.concatenate([j.rows.train for j in jobs])
    evaluated = np.concatenate([getattr(j.evaluated, part) for j in jobs for part in EVAL_PARTS])
    blocks = {b for j in jobs for b in j.layer}
    with feature_cache(fs, train, blocks, progress, eval_fs=eval_fs, eval_rows=evaluated,
                       scratch=cfg.scratch) as cache:
        bar = tqdm(total=len(jobs), desc="probe", unit="job", disable=not progress)
        with appending(run.results) as append:
            def write(line: dict) -> None:
                append(line)
                run.written += 1

            with _parallel_backend(cfg):
                if cfg.jobs == 1 and cfg.backend == "local":  # every line is written the moment it is computed
                    done_jobs = (run_job(j, cache, write) for j in jobs)
                else:  # a worker's lines come back when its whole job is done
                    tasks = (delayed(run_job)(j, cache) for j in jobs)
                    n_jobs = cfg.jobs if cfg.backend == "local" else -1
                    done_jobs = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(tasks)
                for lines, errors in done_jobs:
                    for line in lines:
                        write(line)
                    run.errors.extend(errors)
                    bar.update()
        bar.close()


@contextlib.contextmanager
def _parallel_backend(cfg: StudyConfig) -> Iterator[None]:
    """joblib's backend for the study's jobs: its own process pool, or a dask cluster's workers.

    Why joblib's dask backend rather than a scheduler of our own: the jobs, their order and their lines
    stay exactly those of ``--jobs N`` (so results are identical), and dask brings the cluster tooling
    (SLURM/Kubernetes deployment, dashboards, worker restarts) users already run.
    """
    if cfg.backend == "local":
        yield
        return
    try:
        from distributed import Client
    except ImportError:
        raise StudyError("--backend dask needs dask's distributed scheduler: pip install 'attrib[dask]'") from None
    from joblib import parallel_config

    try:
        client = Client(cfg.scheduler, timeout="30s")
    except (OSError, TimeoutError) as exc:
        raise StudyError(f"--scheduler {cfg.scheduler}: cannot reach the dask scheduler ({exc}); start one "
                         "(dask scheduler / dask worker, or dask-jobqueue) and give its address") from None
    try:
        with parallel_config(backend="dask"):
            yield
    finally:
        client.close()
