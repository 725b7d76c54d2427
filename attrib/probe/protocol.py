"""Model selection: which value of a head's path hyperparameter (C, k, ...) a result is reported with,
and which (layer, head, score) a saved head uses.

Why two protocols: the paper's code picks C by the validation AUROC *against the unknown generators'
validation images*, so its open-set numbers have seen (other images of) the very generators they
claim not to know. That is needed to replicate its tables, and it is optimistic. ``clean`` never
looks at an unknown generator before the test.

``clean`` (default)
    Every hyperparameter is chosen on known-class validation data only. Criterion: the highest
    validation closed-set accuracy; ties (frequent with few shots or easy data) are broken by the lower
    validation log-loss (the mean negative log-probability the head gives the true class, probabilities
    clipped at 1e-15), then by the first value in path order. The chosen head is the same for every
    open-set score.
``paper``
    The paper's code, convention for convention. Training classes are balanced by cycling
    (:func:`balance_by_cycling`: every class repeated, index modulo its size, up to the size of the
    largest class, as its training loader does), then the path value with the highest validation
    ``auroc_paper`` (its AUROC: a tied known/unknown pair counts 0, see
    :func:`attrib.probe.metrics.auroc_paper`) of *the score being evaluated* is chosen, known
    validation images against the unknown generators' validation images (for MSP this is exactly the
    paper's code). Ties are broken by validation accuracy, then log-loss, then path order, so a score
    that does not depend on the head (e.g. a k-NN distance) falls back to the clean choice instead of
    the strongest regularisation. (The paper's script sweeps C only on the first block it runs and
    reuses it for later blocks; here every block is swept, the same when a single block is run.)

Why ``clean`` does not balance: duplicating the images of a small class is a class weighting in
disguise (logistic regression) or extra copies in the neighbour bank (k-NN); the clean protocol fits
the training images as they are, and says how many per class in each result line.

Scorer hyperparameters are their defaults under both protocols, unless set with ``--param``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from attrib.errors import AttribError
from attrib.probe.geometry import class_columns
from attrib.probe.heads import ProbeHead
from attrib.probe.metrics import accuracy, auroc, auroc_paper, oscr

PROTOCOLS = ("clean", "paper")
# how each protocol feeds the training rows to the heads (recorded in every result line's config)
BALANCE = {"clean": "none", "paper": "cycle"}
LOGLOSS_EPS = 1e-15
PAPER_CRITERION = "val_auroc_paper_unknown"  # auroc_paper, known validation vs unknown generators' validation


class SelectionError(AttribError, ValueError):
    """Model selection impossible with the data given; the message says what is missing."""


@dataclass
class Candidate:
    """One fitted head along the path, with its known-class validation numbers."""

    value: Any
    head: ProbeHead
    val_accuracy: float
    val_logloss: float


@dataclass
class Selection:
    """The head a result is reported with, and why it was chosen."""

    head: ProbeHead
    param: str | None
    value: Any
    criterion: str
    val: dict[str, float] = field(default_factory=dict)
    index: int = 0
    n_values: int = 1

    @property
    def hparams(self) -> dict[str, Any]:
        return {self.param: _plain(self.value)} if self.param else {}

    def summary(self) -> dict[str, Any]:
        at_edge = self.n_values > 1 and self.index in (0, self.n_values - 1)
        return {"criterion": self.criterion, **{k: float(v) for k, v in self.val.items()},
                "index": self.index, "n_values": self.n_values, "at_grid_edge": bool(at_edge)}


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def log_loss(proba: np.ndarray, classes: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-probability of the true class (scikit-learn's log_loss, clipped); ``proba``
    has one column per entry of the sorted ``classes`` (a head's ``predict_proba`` and ``classes_``)."""
    if not len(y):
        return float("nan")
    col = class_columns(classes, y)
    p = np.where(col >= 0, proba[np.arange(len(y)), col], 0.0)
    return float(-np.mean(np.log(np.clip(p, LOGLOSS_EPS, 1.0))))


def balance_by_cycling(y: np.ndarray) -> np.ndarray:
    """Positions into ``y`` that balance its classes as the paper's training loader does.

    Every class is repeated up to the size of the largest class, its ``i``-th row being its
    ``i % size``-th image (so a class of 3 next to one of 7 gives rows 0,1,2,0,1,2,0 of it). Classes
    come in sorted order, each class's images in their order in ``y``. A class as large as the largest
    is taken once, unchanged.
    """
    y = np.asarray(y)
    classes = np.unique(y)
    if not len(classes):
        return np.zeros(0, dtype=np.int64)
    members = [np.flatnonzero(y == c) for c in classes]
    largest = max(len(m) for m in members)
    return np.concatenate([m[np.arange(largest) % len(m)] for m in members]).astype(np.int64)


def training_positions(y: np.ndarray, protocol: str) -> np.ndarray:
    """Positions into the training labels ``y`` that ``protocol`` fits heads and scorers on."""
    if BALANCE[protocol] == "cycle":
        return balance_by_cycling(y)
    return np.arange(len(y), dtype=np.int64)


def path_values(head_cls: type[ProbeHead], grid: dict[str, Sequence] | None = None) -> list | None:
    """The values of ``head_cls``'s path hyperparameter to sweep: the grid's, else the head's default."""
    if head_cls.path_param is None:
        return None
    if grid and head_cls.path_param in grid:
        return list(grid[head_cls.path_param])
    return list(head_cls.default_path)


def fit_candidates(head_cls: type[ProbeHead], X: np.ndarray, y: np.ndarray, X_val: np.ndarray,
                   y_val: np.ndarray, values: Sequence | None = None, *, by_accuracy: bool = False,
                   **params) -> list[Candidate]:
    """Fit the whole path (one call: heads make it fast) and measure each head on known validation data.

    ``by_accuracy``: the caller chooses by validation accuracy (:func:`select_clean`), so the head may
    solve the values that cannot win less precisely (``path_uses_validation``); a choice by another
    criterion (:func:`select_paper`) needs every head as precise as the head's tolerance says.
    """
    if by_accuracy and head_cls.path_uses_validation:
        params = {**params, "validation": (X_val, y_val)}
    heads = head_cls.fit_path(X, y, values, **params)
    out = []
    for head, (pred, proba) in zip(heads, head_cls.path_predict_with_proba(heads, X_val)):
        value = getattr(head, head_cls.path_param) if head_cls.path_param else None
        out.append(Candidate(_plain(value), head, accuracy(y_val, pred), log_loss(proba, head.classes_, y_val)))
    return out


def best_index(keys: list[tuple]) -> int:
    """Index of the largest key; the first one among exact ties. NaN counts as the worst."""
    clean = [tuple(-np.inf if (isinstance(v, float) and np.isnan(v)) else v for v in k) for k in keys]
    best = 0
    for i, k in enumerate(clean):
        if k > clean[best]:
            best = i
    return best


def select_clean(cands: list[Candidate], param: str | None) -> Selection:
    """Highest validation accuracy, then lowest validation log-loss, then path order."""
    i = best_index([(c.val_accuracy, -c.val_logloss) for c in cands])
    c = cands[i]
    return Selection(c.head, param, c.value, "val_accuracy", {"val_accuracy": c.val_accuracy,
                                                              "val_logloss": c.val_logloss}, i, len(cands))


def select_paper(cands: list[Candidate], param: str | None, score: Callable[[ProbeHead], Any],
                 X_val: np.ndarray, X_val_unknown: np.ndarray) -> Selection:
    """Highest validation ``auroc_paper`` of the score against the unknown generators' validation images.

    ``score(head)`` returns a fitted scorer for that head. A scorer that ignores the head
    (``needs_head = False``) has one AUROC along the whole path: it is asked for and measured once.
    The selection records both the criterion's value (``val_auroc_paper``) and the standard AUROC
    (``val_auroc``) of the chosen value; they differ only by the tied known/unknown pairs.
    """
    if not len(X_val_unknown):
        raise SelectionError("--protocol paper needs validation images of the unknown generators, and this "
                             "split has none; use --protocol clean")

    def val_aurocs(scorer: Any) -> tuple[float, float]:
        s_known, s_unknown = scorer.score_samples(X_val), scorer.score_samples(X_val_unknown)
        return auroc_paper(s_known, s_unknown), auroc(s_known, s_unknown)

    first = score(cands[0].head)
    if getattr(first, "needs_head", True):
        aurocs = [val_aurocs(first)] + [val_aurocs(score(c.head)) for c in cands[1:]]
    else:
        aurocs = [val_aurocs(first)] * len(cands)
    i = best_index([(a[0], c.val_accuracy, -c.val_logloss) for a, c in zip(aurocs, cands)])
    c = cands[i]
    return Selection(c.head, param, c.value, PAPER_CRITERION,
                     {"val_auroc_paper": aurocs[i][0], "val_auroc": aurocs[i][1], "val_accuracy": c.val_accuracy,
                      "val_logloss": c.val_logloss}, i, len(cands))


def pseudo_open_set_oscr(make_head: Callable[[], ProbeHead], make_scorers: dict[str, Callable[[ProbeHead], Any]],
                         X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
                         folds: Sequence) -> dict[str, float]:
    """Open-set quality measured without any unknown generator: for each scorer, the mean OSCR over
    folds that each hide one known class from training and treat its validation images as the unknowns.

    ``make_head()`` returns an unfitted head (hyperparameters already chosen), ``make_scorers[name](head)``
    an unfitted scorer for a fitted head. Each fold's head is fitted once and shared by every scorer.
    """
    values: dict[str, list[float]] = {name: [] for name in make_scorers}
    for g in folds:
        tr, va, out = y != g, y_val != g, y_val == g
        head = make_head().fit(X[tr], y[tr])
        correct = head.predict(X_val[va]) == y_val[va]
        for name, make_scorer in make_scorers.items():
            scorer = make_scorer(head).fit(X[tr], y[tr])
            values[name].append(oscr(scorer.score_samples(X_val[va]), correct, scorer.score_samples(X_val[out])))
    return {name: float(np.mean(v)) if v else float("nan") for name, v in values.items()}


def pseudo_folds(y: np.ndarray, protected: Sequence = (0,)) -> list:
    """Classes that can play the unknown: any but the protected ones (``real``, label 0, is never an
    unknown generator), and only while at least two classes remain to train on."""
    classes = [c for c in np.unique(y).tolist() if c not in set(protected)]
    return classes if len(np.unique(y)) - 1 >= 2 else []
