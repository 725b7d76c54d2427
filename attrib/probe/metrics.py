"""Closed-set and open-set metrics.

Conventions (all functions): known-class samples are the *positives*; scores are "higher = more likely a
known generator". Ties between scores are handled exactly (a threshold never splits equal scores).
"""

from __future__ import annotations

import numpy as np


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean(y_true == y_pred)) if y_true.size else float("nan")


def _roc_points(s_known: np.ndarray, s_unknown: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every distinct threshold, from (0, 0) to (1, 1); ties grouped."""
    s = np.concatenate([s_known, s_unknown])
    pos = np.concatenate([np.ones(len(s_known)), np.zeros(len(s_unknown))])
    order = np.argsort(-s, kind="mergesort")
    s, pos = s[order], pos[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each group of equal scores
    tp = np.cumsum(pos)[last]
    fp = np.cumsum(1 - pos)[last]
    tpr = np.r_[0.0, tp / max(len(s_known), 1)]
    fpr = np.r_[0.0, fp / max(len(s_unknown), 1)]
    return fpr, tpr


def auroc(s_known: np.ndarray, s_unknown: np.ndarray) -> float:
    """Area under the ROC curve of known (positive) vs unknown; 0.5 = chance, ties count half."""
    s_known, s_unknown = np.asarray(s_known, float), np.asarray(s_unknown, float)
    if not s_known.size or not s_unknown.size:
        return float("nan")
    fpr, tpr = _roc_points(s_known, s_unknown)
    return float(np.trapezoid(tpr, fpr))


def oscr(s_known: np.ndarray, correct: np.ndarray, s_unknown: np.ndarray) -> float:
    """Open-Set Classification Rate (Dhamija et al., NeurIPS 2018).

    Area under the curve of the correct-classification rate (known samples both classified correctly and
    scored at or above the threshold, over all known samples) against the false-positive rate (unknown
    samples scored at or above the threshold), over every threshold. Equals AUROC when every known sample
    is classified correctly, and closed-set accuracy x 1 at FPR = 1.
    """
    s_known, s_unknown = np.asarray(s_known, float), np.asarray(s_unknown, float)
    correct = np.asarray(correct, bool)
    if not s_known.size or not s_unknown.size:
        return float("nan")
    s = np.concatenate([s_known, s_unknown])
    is_known = np.concatenate([np.ones(len(s_known), bool), np.zeros(len(s_unknown), bool)])
    hit = np.concatenate([correct, np.zeros(len(s_unknown), bool)])
    order = np.argsort(-s, kind="mergesort")
    s, is_known, hit = s[order], is_known[order], hit[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    ccr = np.r_[0.0, np.cumsum(hit)[last] / len(s_known)]
    fpr = np.r_[0.0, np.cumsum(~is_known)[last] / len(s_unknown)]
    return float(np.trapezoid(ccr, fpr))


def open_set_summary(y_true: np.ndarray, y_pred: np.ndarray, s_known: np.ndarray,
                     s_unknown: np.ndarray) -> dict[str, float]:
    """The paper's three numbers (as fractions): closed-set accuracy, AUROC and OSCR."""
    correct = np.asarray(y_true) == np.asarray(y_pred)
    return {
        "accuracy": accuracy(y_true, y_pred),
        "auroc": auroc(s_known, s_unknown),
        "oscr": oscr(s_known, correct, s_unknown),
    }
