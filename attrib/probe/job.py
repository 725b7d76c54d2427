"""One job of a study: a (split, layer, shots, seed), its feature matrices, and the result lines of the
(head, score) pairs still missing for it.

Why apart from :mod:`attrib.probe.study`: a job is what travels to a worker process (or a dask worker)
and runs there alone, so everything it needs is in the :class:`Job` it is given and the feature cache it
reads; planning the jobs, resuming and writing ``results.jsonl`` stay with the study. The heads and
scores of a job share its features, and the scores share the fitted head.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from attrib import __version__
from attrib.data.splits import Split, SplitRows
from attrib.jsonio import dumps, to_jsonable
from attrib.probe.evalrows import EVAL_PARTS
from attrib.probe.featcache import FeatureCache
from attrib.probe.heads import ProbeHead
from attrib.probe.metrics import evaluate
from attrib.probe.options import layer_name, shots_name
from attrib.probe.params import line_params, params_key
from attrib.probe.protocol import (BALANCE, Selection, SelectionError, fit_candidates, path_values, select_clean,
                                   select_paper, training_positions)
from attrib.probe.scorefile import write_scores


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


def warm_up() -> int:
    """Import what a job needs (torch and the solver; scikit-learn with this module) in a worker before
    its first job arrives, while the main process is still reading features; the worker's process id."""
    import attrib.probe.logreg_path  # noqa: F401

    return os.getpid()


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
                                       by_accuracy=job.protocol == "clean", **job.head_params.get(head_name, {}))
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
