"""Closed-set and open-set metrics, exact to the last digit (ties included).

Conventions, shared by every function here:

- Known-class samples are the *positives*; scores mean "higher = more likely a known generator".
- A threshold ``t`` accepts a sample as known when ``score >= t``. Curves are evaluated only at the
  observed score values, so a threshold never splits a group of equal scores: tied samples are
  accepted or rejected together. Areas use the trapezoid rule between those points, so a tie between a
  known and an unknown sample counts one half in AUROC (the Mann-Whitney convention, as scikit-learn).
- Rates are fractions in [0, 1]; a metric that is undefined for the given input (no unknown samples,
  no known samples) is ``nan``, never an exception, so a study can record it and go on.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

ArrayLike = np.ndarray | Sequence


def _scores(s: ArrayLike, what: str) -> np.ndarray:
    s = np.asarray(s, dtype=np.float64).ravel()
    if np.isnan(s).any():
        raise ValueError(f"{what}: {int(np.isnan(s).sum())} scores are NaN; an open-set score must be a number "
                         "for every sample (check the scorer and the features)")
    return s


# ------------------------------------------------------------------------------------- closed set
def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean(y_true == y_pred)) if y_true.size else float("nan")


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """Counts (K, K): row = true class, column = predicted class, in the order of ``labels``.

    Predictions outside ``labels`` are not counted (they cannot happen for a closed-set head).
    """
    labels = np.asarray(labels)
    k = len(labels)
    if not k:
        return np.zeros((0, 0), dtype=np.int64)
    sorter = np.argsort(labels, kind="stable")

    def index(a: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        a = np.asarray(a)
        pos = np.clip(np.searchsorted(labels, a, sorter=sorter), 0, k - 1)
        return sorter[pos], labels[sorter[pos]] == a

    t, t_ok = index(y_true)
    p, p_ok = index(y_pred)
    keep = t_ok & p_ok
    return np.bincount(t[keep] * k + p[keep], minlength=k * k).reshape(k, k).astype(np.int64)


def per_class_recall(y_true: ArrayLike, y_pred: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """Recall of each class in ``labels`` (nan for a class with no samples)."""
    cm = confusion_matrix(y_true, y_pred, labels)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def macro_f1(y_true: ArrayLike, y_pred: ArrayLike, labels: ArrayLike | None = None) -> float:
    """Unweighted mean of per-class F1 = 2TP / (2TP + FP + FN).

    Classes default to those present in ``y_true`` or ``y_pred`` (scikit-learn's default), so no class
    has an empty denominator. A class given in ``labels`` that never occurs anywhere scores 0.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if not y_true.size:
        return float("nan")
    labels = np.unique(np.concatenate([y_true, y_pred])) if labels is None else np.asarray(labels)
    cm = confusion_matrix(y_true, y_pred, labels)
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(axis=0) + cm.sum(axis=1)  # (TP + FP) + (TP + FN)
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    return float(f1.mean())


# --------------------------------------------------------------------------------------- open set
def _group_ends(s_sorted_desc: np.ndarray) -> np.ndarray:
    """Last index of each run of equal scores (``!=`` rather than ``diff``: inf - inf is nan)."""
    return np.r_[np.flatnonzero(s_sorted_desc[1:] != s_sorted_desc[:-1]), len(s_sorted_desc) - 1]


def _sorted_counts(s_pos: np.ndarray, s_neg: np.ndarray, pos_weight: np.ndarray | None = None):
    """Thresholds (distinct scores, descending) and cumulative positives / negatives accepted at each."""
    s = np.concatenate([s_pos, s_neg])
    w_pos = np.ones(len(s_pos)) if pos_weight is None else np.asarray(pos_weight, dtype=np.float64)
    pos = np.concatenate([w_pos, np.zeros(len(s_neg))])
    neg = np.concatenate([np.zeros(len(s_pos)), np.ones(len(s_neg))])
    order = np.argsort(-s, kind="mergesort")
    s = s[order]
    ends = _group_ends(s)
    return s[ends], np.cumsum(pos[order])[ends], np.cumsum(neg[order])[ends]


def roc_curve(s_known: ArrayLike, s_unknown: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(FPR, TPR, thresholds) at every distinct score, descending, preceded by the point (0, 0) whose
    threshold is +inf (nothing accepted)."""
    s_known, s_unknown = _scores(s_known, "known scores"), _scores(s_unknown, "unknown scores")
    thr, tp, fp = _sorted_counts(s_known, s_unknown)
    tpr = np.r_[0.0, tp / max(len(s_known), 1)]
    fpr = np.r_[0.0, fp / max(len(s_unknown), 1)]
    return fpr, tpr, np.r_[np.inf, thr]


def auroc(s_known: ArrayLike, s_unknown: ArrayLike) -> float:
    """Area under the ROC curve, known = positive: the probability that a random known sample scores
    above a random unknown one, ties counting one half. 0.5 = chance."""
    s_known, s_unknown = _scores(s_known, "known scores"), _scores(s_unknown, "unknown scores")
    if not s_known.size or not s_unknown.size:
        return float("nan")
    fpr, tpr, _ = roc_curve(s_known, s_unknown)
    return float(np.trapezoid(tpr, fpr))


def threshold_at_tpr(s_known: ArrayLike, tpr: float = 0.95) -> float:
    """The highest threshold that accepts at least ``tpr`` of the known samples.

    With ``n`` known scores sorted in descending order, it is the ``ceil(tpr * n)``-th one. Because
    equal scores are accepted together, the achieved TPR can exceed ``tpr`` when that score is tied;
    it is never below it. This is the threshold ``attrib`` saves with a head (rejection below it).
    """
    s = np.sort(_scores(s_known, "known scores"))[::-1]
    if not s.size:
        return float("nan")
    if not 0 < tpr <= 1:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    k = min(max(math.ceil(tpr * len(s) - 1e-9), 1), len(s))
    return float(s[k - 1])


def fpr_at_tpr(s_known: ArrayLike, s_unknown: ArrayLike, tpr: float = 0.95) -> float:
    """FPR of unknowns at the operating point where the TPR of knowns first reaches ``tpr``.

    Convention: the threshold is :func:`threshold_at_tpr` (the highest threshold accepting at least
    ``tpr`` of the knowns, a threshold never splitting ties) and the result is the fraction of unknown
    samples scoring at or above it. No interpolation between ROC points. This equals
    ``fpr[argmax(tpr >= 0.95)]`` on scikit-learn's ``roc_curve(..., drop_intermediate=False)``.
    """
    s_unknown = _scores(s_unknown, "unknown scores")
    if not s_unknown.size or not np.asarray(s_known).size:
        return float("nan")
    t = threshold_at_tpr(s_known, tpr)
    return float(np.mean(s_unknown >= t))


def average_precision(s_pos: ArrayLike, s_neg: ArrayLike) -> float:
    """Area under the precision-recall curve as the step sum AP = sum_n (R_n - R_{n-1}) P_n over the
    distinct thresholds (no interpolation; scikit-learn's ``average_precision_score``)."""
    s_pos, s_neg = _scores(s_pos, "positive scores"), _scores(s_neg, "negative scores")
    if not s_pos.size:
        return float("nan")
    _, tp, fp = _sorted_counts(s_pos, s_neg)
    precision = tp / (tp + fp)
    recall = tp / len(s_pos)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def aupr_in(s_known: ArrayLike, s_unknown: ArrayLike) -> float:
    """Average precision with the known samples as positives (high score = known)."""
    if not np.asarray(s_unknown).size:
        return float("nan")
    return average_precision(s_known, s_unknown)


def aupr_out(s_known: ArrayLike, s_unknown: ArrayLike) -> float:
    """Average precision with the unknown samples as positives, ranked by the negated score."""
    if not np.asarray(s_known).size:
        return float("nan")
    return average_precision(-_scores(s_unknown, "unknown scores"), -_scores(s_known, "known scores"))


def oscr(s_known: ArrayLike, correct: ArrayLike, s_unknown: ArrayLike) -> float:
    """Open-Set Classification Rate (Dhamija et al., NeurIPS 2018).

    Area under the curve of the correct-classification rate CCR(t) (known samples both classified
    correctly and scored >= t, over all known samples) against the false-positive rate FPR(t) (unknown
    samples scored >= t, over all unknown samples), over every threshold, from (0, 0) to
    (1, closed-set accuracy). It equals AUROC when every known sample is classified correctly and never
    exceeds min(AUROC, accuracy).

    Unlike the reference code of several open-set papers, the curve ends at (1, accuracy) rather than
    at an added point (1, 1), and tied scores are never split.
    """
    s_known, s_unknown = _scores(s_known, "known scores"), _scores(s_unknown, "unknown scores")
    correct = np.asarray(correct, dtype=bool).ravel()
    if correct.shape != s_known.shape:
        raise ValueError(f"oscr: {len(correct)} correctness flags for {len(s_known)} known scores")
    if not s_known.size or not s_unknown.size:
        return float("nan")
    _, cc, fp = _sorted_counts(s_known, s_unknown, pos_weight=correct)
    ccr = np.r_[0.0, cc / len(s_known)]
    fpr = np.r_[0.0, fp / len(s_unknown)]
    return float(np.trapezoid(ccr, fpr))


# ------------------------------------------------------------------------------ per unknown source
def auroc_per_unknown(s_known: ArrayLike, s_unknown: ArrayLike, unknown_source: ArrayLike) -> dict[str, float]:
    """AUROC of all known samples against each unknown generator's samples alone."""
    s_unknown = _scores(s_unknown, "unknown scores")
    src = np.asarray(unknown_source).astype(str)
    return {g: auroc(s_known, s_unknown[src == g]) for g in dict.fromkeys(src.tolist())}


def unknown_confusion(pred_unknown: ArrayLike, unknown_source: ArrayLike, labels: ArrayLike) -> dict[str, list[int]]:
    """For each unknown generator: how many of its samples the head assigned to each known class."""
    pred = np.asarray(pred_unknown)
    src = np.asarray(unknown_source).astype(str)
    labels = np.asarray(labels)
    return {g: [int(np.sum(pred[src == g] == c)) for c in labels] for g in dict.fromkeys(src.tolist())}


def most_confused(pred_unknown: ArrayLike, unknown_source: ArrayLike, labels: ArrayLike,
                  names: Sequence[str]) -> dict[str, dict[str, float | str]]:
    """The known class each unknown generator is most often mistaken for, with the fraction of that
    generator's samples assigned to it (ties: the class listed first)."""
    out: dict[str, dict[str, float | str]] = {}
    for g, counts in unknown_confusion(pred_unknown, unknown_source, labels).items():
        i = int(np.argmax(counts))
        out[g] = {"class": str(names[i]), "fraction": counts[i] / max(sum(counts), 1)}
    return out


def evaluate(y_true: ArrayLike, y_pred: ArrayLike, s_known: ArrayLike, s_unknown: ArrayLike,
             pred_unknown: ArrayLike, unknown_source: ArrayLike, labels: ArrayLike,
             names: Sequence[str], tpr: float = 0.95) -> dict:
    """Every metric of one test run, JSON-ready (floats, lists and dicts; ``nan`` where undefined).

    ``labels`` are the head's class labels in order and ``names`` their source names;
    ``pred_unknown`` are the head's predictions on the unknown samples.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    correct = y_true == y_pred
    recall = per_class_recall(y_true, y_pred, labels)
    return {
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred),
        "auroc": auroc(s_known, s_unknown),
        "fpr95": fpr_at_tpr(s_known, s_unknown, tpr),
        "aupr_in": aupr_in(s_known, s_unknown),
        "aupr_out": aupr_out(s_known, s_unknown),
        "oscr": oscr(s_known, correct, s_unknown),
        "recall": {str(n): float(r) for n, r in zip(names, recall)},
        "confusion": confusion_matrix(y_true, y_pred, labels).tolist(),
        "auroc_per_unknown": auroc_per_unknown(s_known, s_unknown, unknown_source),
        "unknown_confusion": unknown_confusion(pred_unknown, unknown_source, labels),
        "unknown_predicted_as": most_confused(pred_unknown, unknown_source, labels, names),
    }

