"""Closed-set and open-set metrics, exact to the last digit (ties included).

Conventions, shared by every function here:

- Known-class samples are the *positives*; scores mean "higher = more likely a known generator".
- A threshold ``t`` accepts a sample as known when ``score >= t``. Curves are evaluated only at the
  observed score values, so a threshold never splits a group of equal scores: tied samples are
  accepted or rejected together. Areas use the trapezoid rule between those points, so a tie between a
  known and an unknown sample counts one half in AUROC (the Mann-Whitney convention, as scikit-learn).
- Rates are fractions in [0, 1]; a metric that is undefined for the given input (no unknown samples,
  no known samples) is ``nan``, never an exception, so a study can record it and go on.

The ``*_paper`` functions reproduce the conventions of Cioni et al.'s evaluation code instead (a tie
counting 0 in AUROC, a lagged OSCR walk, a nearest-TPR operating point), so that the paper's table can be
replicated digit for digit; every result line carries both.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

ArrayLike = np.ndarray | Sequence


def _scores(s: ArrayLike, what: str) -> np.ndarray:
    s = np.asarray(s, dtype=np.float64).ravel()
    if np.isnan(s).any():
        raise ValueError(f"{what}: {int(np.isnan(s).sum())} scores are NaN; an open-set score must be a number "
                         "for every sample (check the scorer and the features)")
    return s


def _correct_flags(correct: ArrayLike, s_known: np.ndarray, who: str) -> np.ndarray:
    """One boolean per known sample: was it classified correctly."""
    correct = np.asarray(correct, dtype=bool).ravel()
    if correct.shape != s_known.shape:
        raise ValueError(f"{who}: {len(correct)} correctness flags for {len(s_known)} known scores")
    return correct


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

    The reference code of several open-set papers (Cioni et al.'s among them) appends a point (1, 1) to
    this curve; that point adds no area, because the curve's last point already has FPR 1 and the
    segment between them is vertical. What makes that code's value differ is a one-position lag in its
    walk over the sorted scores, and tie order decided by the sort: see :func:`oscr_paper`. Here tied
    scores are never split.
    """
    s_known, s_unknown = _scores(s_known, "known scores"), _scores(s_unknown, "unknown scores")
    if not s_known.size or not s_unknown.size:
        _correct_flags(correct, s_known, "oscr")
        return float("nan")
    fpr, ccr, _ = oscr_curve(s_known, correct, s_unknown)
    return float(np.trapezoid(ccr, fpr))


def oscr_curve(s_known: ArrayLike, correct: ArrayLike,
               s_unknown: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(FPR, CCR, thresholds) of the OSCR curve at every distinct score, descending, preceded by the
    point (0, 0) whose threshold is +inf: the curve :func:`oscr` integrates (and reports plot).

    CCR(t) = known samples classified correctly and scored >= t, over all known samples; FPR(t) =
    unknown samples scored >= t, over all unknown samples. Ties are never split, as in :func:`roc_curve`.
    """
    s_known, s_unknown = _scores(s_known, "known scores"), _scores(s_unknown, "unknown scores")
    correct = _correct_flags(correct, s_known, "oscr")
    thr, cc, fp = _sorted_counts(s_known, s_unknown, pos_weight=correct)
    ccr = np.r_[0.0, cc / max(len(s_known), 1)]
    fpr = np.r_[0.0, fp / max(len(s_unknown), 1)]
    return fpr, ccr, np.r_[np.inf, thr]


def rates_at_threshold(s_known: ArrayLike, correct: ArrayLike, s_unknown: ArrayLike,
                       threshold: float) -> dict[str, float]:
    """Where a threshold puts one run: TPR (known accepted), CCR (known accepted and classified
    correctly) and FPR (unknown accepted), a sample being accepted when ``score >= threshold``.
    A rate over no sample is nan. Reports mark operating points (95% TPR, a saved head's) with it."""
    s_known, s_unknown = _scores(s_known, "known scores"), _scores(s_unknown, "unknown scores")
    correct = _correct_flags(correct, s_known, "rates_at_threshold")
    accepted = s_known >= threshold
    mean = lambda a: float(np.mean(a)) if a.size else float("nan")  # noqa: E731
    return {"tpr": mean(accepted), "ccr": mean(accepted & correct), "fpr": mean(s_unknown >= threshold)}


# ------------------------------------------------------------------------- the paper's conventions
# Cioni et al.'s evaluation code (``utils/evaluation.py`` of ``ciodar/UniversalAttribution``) computes
# the same three quantities with different tie and end-point conventions. Replicating its table needs
# them exactly; attrib's own metrics above stay the standard ones. Same inputs, same nan rules, and
# fractions in [0, 1] (that code reports percentages).
def _known_unknown(s_known: ArrayLike, s_unknown: ArrayLike) -> tuple[np.ndarray, np.ndarray] | None:
    """Validated scores, or None when a metric over both groups is undefined (one group empty)."""
    s_known, s_unknown = _scores(s_known, "known scores"), _scores(s_unknown, "unknown scores")
    return (s_known, s_unknown) if s_known.size and s_unknown.size else None


def auroc_paper(s_known: ArrayLike, s_unknown: ArrayLike) -> float:
    """AUROC as the paper's code computes it: P(known score > unknown score), a tie counting 0.

    Its ROC walk rejects the known sample first when a known and an unknown score are equal, so a tied
    pair is ranked the wrong way round. The value is therefore :func:`auroc` minus half the fraction of
    (known, unknown) pairs that are tied: equal to it when no score is shared, 0 (not 0.5) when every
    score is the same. This matters for heads whose MSP is often exactly 1 (k-NN).
    """
    both = _known_unknown(s_known, s_unknown)
    if both is None:
        return float("nan")
    s_known, s_unknown = both
    strictly_below = np.searchsorted(np.sort(s_unknown), s_known, side="left")  # unknowns < each known
    return float(strictly_below.sum() / (s_known.size * s_unknown.size))


def tnr95_paper(s_known: ArrayLike, s_unknown: ArrayLike, tpr: float = 0.95) -> float:
    """True-negative rate of unknowns at the paper's "95% TPR" point.

    The paper's code walks all scores in ascending order (a known before an unknown of equal score),
    rejecting one sample per step, starting from "everything accepted". Of the points of that walk it
    takes the first whose TPR is nearest ``tpr`` (``argmin |TPR - tpr|``, in float64 as that code
    does), and returns 1 - FPR there. Unlike ``1 - fpr95``, the TPR may fall short of ``tpr`` (with 10
    known samples, 0.9 is nearer than 1.0 in floating point), and of the several points sharing that
    TPR the first one of the walk, which accepts the most unknowns, is used.
    """
    both = _known_unknown(s_known, s_unknown)
    if both is None:
        return float("nan")
    s_known, s_unknown = both
    nk, nu = s_known.size, s_unknown.size
    is_unknown = np.r_[np.zeros(nk, dtype=np.int64), np.ones(nu, dtype=np.int64)]
    order = np.lexsort((is_unknown, np.r_[s_known, s_unknown]))  # by score, then known first
    accepted_known = nk - np.r_[0, np.cumsum(1 - is_unknown[order])]  # before any step, after each
    accepted_unknown = nu - np.r_[0, np.cumsum(is_unknown[order])]
    at = int(np.argmin(np.abs(accepted_known / nk - tpr)))
    return float(1.0 - accepted_unknown[at] / nu)


def oscr_paper(s_known: ArrayLike, correct: ArrayLike, s_unknown: ArrayLike) -> float:
    """OSCR as the paper's code computes it (its ``compute_oscr``).

    All scores, known first then unknown, are put in the order of numpy's default ``argsort``
    (ascending; tied scores stay in whatever order that sort leaves them, as in that code, an order
    numpy does not promise to keep across versions or CPUs; for a few dozen values it is the input
    order). Position
    ``j`` of that order gives the point (FPR, CCR) with the unknowns at positions ``>= j`` and the
    correctly classified knowns at positions ``> j`` — one position later: the sample at ``j`` counts
    as accepted if it is unknown and as rejected if it is known. The curve is those points for
    ``j = 0 .. n-2`` plus (0, 0) and (1, 1), sorted, and integrated with the trapezoid rule. The
    (1, 1) point adds no area (the first point already has FPR 1); the lag is what lowers the value
    below :func:`oscr`, most where known and unknown scores interleave or tie.

    Computed from integer counts, so the result is exact up to one final division.
    """
    s_known, s_unknown = _scores(s_known, "known scores"), _scores(s_unknown, "unknown scores")
    correct = _correct_flags(correct, s_known, "oscr_paper")
    if not s_known.size or not s_unknown.size:
        return float("nan")
    nk, nu = s_known.size, s_unknown.size
    order = np.argsort(np.r_[s_known, s_unknown])  # default kind on purpose: the paper's tie order
    cc = np.r_[correct.astype(np.int64), np.zeros(nu, dtype=np.int64)][order]
    un = np.r_[np.zeros(nk, dtype=np.int64), np.ones(nu, dtype=np.int64)][order]
    cc_after = np.cumsum(cc[::-1])[::-1]  # correct knowns at positions >= j
    un_from = np.cumsum(un[::-1])[::-1]   # unknowns at positions >= j
    n = nk + nu
    # (1, 1), positions 0..n-2, (0, 0): already in the code's sorted order, both counts fall along it
    fp = np.r_[nu, un_from[:n - 1], 0]
    ok = np.r_[nk, cc_after[1:n], 0]  # correct knowns at positions > j: the lag
    twice_area = np.sum((fp[:-1] - fp[1:]) * (ok[:-1] + ok[1:]))
    return float(twice_area / (2 * nk * nu))


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


OPEN_SET_METRICS = ("auroc", "fpr95", "aupr_in", "aupr_out", "oscr", "auroc_paper", "oscr_paper", "tnr95_paper")


def open_set_metrics(s_known: ArrayLike, correct: ArrayLike, s_unknown: ArrayLike,
                     tpr: float = 0.95) -> dict[str, float]:
    """The known-versus-unknown metrics (:data:`OPEN_SET_METRICS`) of one set of unknown samples.

    ``correct``: for each known sample, whether the head classified it correctly (OSCR needs it).
    """
    return {
        "auroc": auroc(s_known, s_unknown),
        "fpr95": fpr_at_tpr(s_known, s_unknown, tpr),
        "aupr_in": aupr_in(s_known, s_unknown),
        "aupr_out": aupr_out(s_known, s_unknown),
        "oscr": oscr(s_known, correct, s_unknown),
        "auroc_paper": auroc_paper(s_known, s_unknown),
        "oscr_paper": oscr_paper(s_known, correct, s_unknown),
        "tnr95_paper": tnr95_paper(s_known, s_unknown, tpr),
    }


def evaluate_groups(y_true: ArrayLike, y_pred: ArrayLike, s_known: ArrayLike, s_unknown: ArrayLike,
                    unknown_source: ArrayLike, unknown_groups: Mapping[str, Sequence[str]],
                    tpr: float = 0.95) -> dict[str, dict[str, float]]:
    """Open-set metrics per group of unknown generators, plus ``all`` (every unknown sample).

    ``unknown_groups`` maps a group name to the unknown source names it holds, e.g. the paper's OSMA
    split ``{"seed": [...], "arch": [...], "dataset": [...]}``: the known samples are the same for every
    group, the unknown ones are those whose source is in the group. Each group's entry is exactly what
    :func:`open_set_metrics` gives on that group's unknowns alone, plus ``n_unknown``. Groups may
    overlap; a source in no group counts in ``all`` only. A group named ``all`` is allowed only if it
    names exactly the unknown sources present (it is the union by definition).
    """
    s_unknown = _scores(s_unknown, "unknown scores")
    src = np.asarray(unknown_source).astype(str).ravel()
    if src.shape != s_unknown.shape:
        raise ValueError(f"evaluate_groups: {len(src)} unknown source names for {len(s_unknown)} unknown scores")
    correct = np.asarray(y_true) == np.asarray(y_pred)
    present = sorted(set(src.tolist()))
    out: dict[str, dict[str, float]] = {}
    for name, members in unknown_groups.items():
        members = _group_members(name, members, present)
        if name != "all":
            keep = np.isin(src, members)
            out[name] = {**open_set_metrics(s_known, correct, s_unknown[keep], tpr), "n_unknown": int(keep.sum())}
    out["all"] = {**open_set_metrics(s_known, correct, s_unknown, tpr), "n_unknown": int(s_unknown.size)}
    return out


def _group_members(name: str, members: Sequence[str], present: list[str]) -> list[str]:
    """A group's source names, checked against the unknown sources that have test samples: a name with
    no sample is a typo or a missing folder, and would silently shrink the group."""
    if isinstance(members, str):
        raise ValueError(f"unknown group {name!r}: give a list of source names, not the string {members!r}")
    members = [str(m) for m in members]
    missing = sorted(set(members) - set(present))
    if missing or not members:
        raise ValueError(f"unknown group {name!r} names {', '.join(missing) or 'no source'}, but the unknown test "
                         f"samples come from {', '.join(present) or 'no source'}; fix the split's unknown groups")
    if name == "all" and sorted(set(members)) != present:
        raise ValueError(f"unknown group 'all' must name every unknown source ({', '.join(present)}): 'all' is "
                         "always the metrics over every unknown sample")
    return members


def evaluate(y_true: ArrayLike, y_pred: ArrayLike, s_known: ArrayLike, s_unknown: ArrayLike,
             pred_unknown: ArrayLike, unknown_source: ArrayLike, labels: ArrayLike,
             names: Sequence[str], tpr: float = 0.95,
             unknown_groups: Mapping[str, Sequence[str]] | None = None) -> dict:
    """Every metric of one test run, JSON-ready (floats, lists and dicts; ``nan`` where undefined).

    ``labels`` are the head's class labels in order and ``names`` their source names;
    ``pred_unknown`` are the head's predictions on the unknown samples. The open-set fields are the
    standard metrics and, beside them, the paper's conventions (``auroc_paper``, ``oscr_paper``,
    ``tnr95_paper``). With ``unknown_groups`` (see :func:`evaluate_groups`) a ``groups`` field holds the
    open-set metrics of each group and of ``all``.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    correct = y_true == y_pred
    recall = per_class_recall(y_true, y_pred, labels)
    out = {
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred),
        **open_set_metrics(s_known, correct, s_unknown, tpr),
        "recall": {str(n): float(r) for n, r in zip(names, recall)},
        "confusion": confusion_matrix(y_true, y_pred, labels).tolist(),
        "auroc_per_unknown": auroc_per_unknown(s_known, s_unknown, unknown_source),
        "unknown_confusion": unknown_confusion(pred_unknown, unknown_source, labels),
        "unknown_predicted_as": most_confused(pred_unknown, unknown_source, labels, names),
    }
    if unknown_groups is not None:
        out["groups"] = evaluate_groups(y_true, y_pred, s_known, s_unknown, unknown_source, unknown_groups, tpr)
    return out
