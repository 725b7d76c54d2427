"""Metrics against hand-computed cases, independent pairwise formulas and scikit-learn, ties included."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from attrib.probe import metrics as M


def _pairwise(s_known, s_unknown, weight=None) -> float:
    """Mann-Whitney form: P(known > unknown) + 0.5 P(tie), optionally counting only weighted knowns."""
    k, u = np.asarray(s_known, float)[:, None], np.asarray(s_unknown, float)[None, :]
    w = np.ones(k.shape[0]) if weight is None else np.asarray(weight, float)
    return float((w[:, None] * ((k > u) + 0.5 * (k == u))).sum() / (k.size * u.size))


def _tied(rng, n, levels=5):
    return rng.integers(0, levels, n).astype(float) / levels  # many exact ties


# ------------------------------------------------------------------------------------------ hand cases
def test_hand_computed_auroc_fpr_oscr() -> None:
    known, unknown = [0.9, 0.8, 0.7], [0.8, 0.1]
    assert M.auroc(known, unknown) == pytest.approx(4.5 / 6)  # the 0.8-0.8 tie counts one half
    assert M.fpr_at_tpr(known, unknown) == 0.5  # threshold 0.7 accepts every known and the unknown 0.8
    # OSCR: CCR/FPR points (0,0) (0,1/3) (.5,1/3) (.5,2/3) (1,2/3) -> area 1/6 + 1/3
    assert M.oscr([0.9, 0.8, 0.7], [True, False, True], [0.85, 0.1]) == pytest.approx(0.5)
    # a known and an unknown sample with the same score: never split, the diagonal
    assert M.oscr([0.5], [True], [0.5]) == pytest.approx(0.5)
    assert M.auroc([0.5], [0.5]) == pytest.approx(0.5)


def test_threshold_never_splits_ties() -> None:
    known = [3.0] * 10 + [2.0] * 10  # the 19th highest score (95% of 20) is tied with the 20th
    assert M.threshold_at_tpr(known, 0.95) == 2.0
    assert M.fpr_at_tpr(known, [2.0, 2.5, 0.0]) == pytest.approx(2 / 3)  # TPR reached is 1.0, not 0.95
    no_tie = [float(i) for i in range(20)]  # exactly 19 of 20 scores >= 1
    assert M.threshold_at_tpr(no_tie, 0.95) == 1.0
    assert M.threshold_at_tpr([5.0, 1.0], 0.95) == 1.0 and M.threshold_at_tpr([5.0, 1.0], 0.5) == 5.0
    assert np.isnan(M.threshold_at_tpr([], 0.95))


def test_infinite_scores_are_ties_not_splits() -> None:
    inf = np.inf
    assert M.auroc([inf, inf], [inf, 0.0]) == pytest.approx(0.75)
    assert M.oscr([inf, inf], [True, True], [inf, 0.0]) == pytest.approx(0.75)


def test_undefined_is_nan_and_nan_scores_fail_clearly() -> None:
    assert np.isnan(M.auroc([0.1, 0.2], [])) and np.isnan(M.oscr([0.1], [True], []))
    assert np.isnan(M.fpr_at_tpr([0.1], [])) and np.isnan(M.aupr_in([0.3], [])) and np.isnan(M.accuracy([], []))
    with pytest.raises(ValueError, match="NaN"):
        M.auroc([0.1, np.nan], [0.3])
    with pytest.raises(ValueError, match="correctness flags"):
        M.oscr([0.1, 0.2], [True], [0.3])


def test_closed_set_hand_case() -> None:
    y = [0, 0, 1, 1, 2]
    p = [0, 1, 1, 1, 0]
    assert M.accuracy(y, p) == pytest.approx(0.6)
    assert M.confusion_matrix(y, p, [0, 1, 2]).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    rec = M.per_class_recall(y, p, [0, 1, 2, 3])
    assert rec[:3].tolist() == [0.5, 1.0, 0.0] and np.isnan(rec[3])  # class 3 has no samples
    # F1: class 0: 2/(2+1+1)=.5, class 1: 4/(4+1)=.8, class 2: 0
    assert M.macro_f1(y, p) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert M.confusion_matrix(["b", "a"], ["a", "a"], ["b", "a"]).tolist() == [[0, 1], [0, 1]]


# --------------------------------------------------------------------------- against scikit-learn
@pytest.mark.parametrize("seed", range(6))
def test_against_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    nk, nu = int(rng.integers(5, 60)), int(rng.integers(5, 60))
    known, unknown = _tied(rng, nk) + 0.2, _tied(rng, nu)
    y = np.r_[np.ones(nk), np.zeros(nu)]
    s = np.r_[known, unknown]
    assert M.auroc(known, unknown) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert M.auroc(known, unknown) == pytest.approx(_pairwise(known, unknown), abs=1e-12)
    assert M.aupr_in(known, unknown) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    assert M.aupr_out(known, unknown) == pytest.approx(skm.average_precision_score(1 - y, -s), abs=1e-12)
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    assert M.fpr_at_tpr(known, unknown) == pytest.approx(fpr[np.argmax(tpr >= 0.95 - 1e-12)], abs=1e-12)
    ours_fpr, ours_tpr, _ = M.roc_curve(known, unknown)
    np.testing.assert_allclose(ours_fpr, fpr, atol=1e-12)
    np.testing.assert_allclose(ours_tpr, tpr, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_closed_set_against_sklearn(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    y = rng.integers(0, 5, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, 5, 200))
    p[p == 4] = 3  # class 4 is never predicted: F1 = 0 for it
    labels = np.arange(5)
    assert M.accuracy(y, p) == skm.accuracy_score(y, p)
    assert M.macro_f1(y, p) == pytest.approx(skm.f1_score(y, p, average="macro"), abs=1e-12)
    np.testing.assert_allclose(M.per_class_recall(y, p, labels), skm.recall_score(y, p, average=None,
                                                                                  labels=labels))
    np.testing.assert_array_equal(M.confusion_matrix(y, p, labels), skm.confusion_matrix(y, p, labels=labels))


@pytest.mark.parametrize("seed", range(6))
def test_oscr_pairwise_and_bounds(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    known, unknown = _tied(rng, 40, 4) + 0.1, _tied(rng, 30, 4)
    correct = rng.random(40) < 0.7
    value = M.oscr(known, correct, unknown)
    assert value == pytest.approx(_pairwise(known, unknown, correct), abs=1e-12)
    assert value <= min(M.auroc(known, unknown), correct.mean()) + 1e-12
    assert M.oscr(known, np.ones(40, bool), unknown) == pytest.approx(M.auroc(known, unknown), abs=1e-12)


# ---------------------------------------------------------------------------------- per unknown source
def test_per_unknown_generator_and_most_confused() -> None:
    known = [0.9, 0.8, 0.7]
    unknown = [0.95, 0.1, 0.2, 0.75]
    src = np.array(["gA", "gB", "gB", "gA"], dtype=object)
    per = M.auroc_per_unknown(known, unknown, src)
    assert list(per) == ["gA", "gB"]
    assert per["gA"] == pytest.approx(_pairwise(known, [0.95, 0.75])) and per["gB"] == 1.0
    pred = [2, 1, 1, 1]  # gA -> classes 2 and 1 (a tie: the class listed first wins), gB -> class 1
    conf = M.most_confused(pred, src, [0, 1, 2], ["real", "x", "y"])
    assert conf == {"gA": {"class": "x", "fraction": 0.5}, "gB": {"class": "x", "fraction": 1.0}}
    assert M.unknown_confusion(pred, src, [0, 1, 2]) == {"gA": [0, 1, 1], "gB": [0, 2, 0]}


def test_evaluate_is_json_ready() -> None:
    import json

    out = M.evaluate([0, 1, 1], [0, 1, 0], [0.9, 0.8, 0.3], [0.5, 0.2], [1, 0], ["g1", "g2"], [0, 1],
                     ["real", "gen"])
    json.dumps(out, allow_nan=True)
    assert set(out) >= {"accuracy", "macro_f1", "auroc", "fpr95", "aupr_in", "aupr_out", "oscr", "recall",
                        "confusion", "auroc_per_unknown", "unknown_predicted_as"}
    assert out["recall"] == {"real": 1.0, "gen": 0.5} and out["confusion"] == [[1, 0], [1, 1]]
