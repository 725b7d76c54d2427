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


# ------------------------------------------------------------------------------ the paper's metrics
def _ints(rng, n, levels):
    """Integer-valued scores: exact ties between known and unknown samples, whatever the shift."""
    return rng.integers(0, levels, n).astype(float)


def _paper_walk(s_known, s_unknown):
    """The paper's ROC walk, step by step: ascending scores, one sample rejected per step, a known
    sample before an unknown one of equal score. Returns the accepted (known, unknown) counts before the
    first step and after each."""
    known, unknown = sorted(s_known), sorted(s_unknown)
    i = j = 0
    points = [(len(known), len(unknown))]
    while i < len(known) or j < len(unknown):
        if j < len(unknown) and (i == len(known) or unknown[j] < known[i]):
            j += 1
        else:
            i += 1
        points.append((len(known) - i, len(unknown) - j))
    return points


def _paper_oscr_by_points(s_known, correct, s_unknown, add_one_one=True):
    """OSCR from the description: argsort positions, CC after j, FP from j, (0, 0) twice, (1, 1), sorted."""
    s = np.r_[s_known, s_unknown]
    order = np.argsort(s)
    ok = np.r_[np.asarray(correct, float), np.zeros(len(s_unknown))][order]
    un = np.r_[np.zeros(len(s_known)), np.ones(len(s_unknown))][order]
    pts = [(un[j:].sum() / len(s_unknown), ok[j + 1:].sum() / len(s_known)) for j in range(len(s) - 1)]
    pts += [(0.0, 0.0), (0.0, 0.0)] + ([(1.0, 1.0)] if add_one_one else [])
    pts = sorted(pts, reverse=True)
    return sum((a[0] - b[0]) * (a[1] + b[1]) / 2 for a, b in zip(pts, pts[1:]))


def test_paper_auroc_counts_ties_as_zero() -> None:
    assert M.auroc_paper([0.5] * 3, [0.5] * 2) == 0.0 and M.auroc([0.5] * 3, [0.5] * 2) == 0.5
    known, unknown = [0.9, 0.8, 0.7], [0.8, 0.1]
    assert M.auroc_paper(known, unknown) == pytest.approx(4 / 6)  # the 0.8-0.8 tie counts 0, not 1/2
    assert M.auroc_paper([np.inf], [np.inf, 1.0]) == 0.5
    assert np.isnan(M.auroc_paper([0.1], [])) and np.isnan(M.auroc_paper([], [0.1]))
    with pytest.raises(ValueError, match="NaN"):
        M.auroc_paper([np.nan], [0.3])


@pytest.mark.parametrize("seed", range(6))
def test_paper_auroc_is_auroc_minus_half_the_ties(seed: int) -> None:
    rng = np.random.default_rng(300 + seed)
    known, unknown = _ints(rng, int(rng.integers(3, 50)), 4) + 1, _ints(rng, int(rng.integers(3, 50)), 4)
    tie_fraction = float(np.mean(known[:, None] == unknown[None, :]))
    assert tie_fraction > 0
    value = M.auroc_paper(known, unknown)
    assert value == pytest.approx(M.auroc(known, unknown) - tie_fraction / 2, abs=1e-12)
    # the paper's curve (trapezoids over its walk) gives the same area
    pts = np.array(_paper_walk(known, unknown), float)
    tpr, fpr = pts[:, 0] / len(known), pts[:, 1] / len(unknown)
    assert value == pytest.approx(-np.trapezoid(1 - fpr, tpr), abs=1e-12)
    without_ties = np.arange(len(known)) + 0.5
    assert M.auroc_paper(without_ties, unknown) == pytest.approx(M.auroc(without_ties, unknown), abs=1e-12)


def test_paper_oscr_lag_by_hand() -> None:
    # ascending: 0.1 (unknown), 0.7 (known, correct), 0.8 (known, wrong), 0.85 (unknown), 0.9 (known, correct)
    # points (FPR, CCR) at positions 0..3: (1, 2/3) (1/2, 1/3) (1/2, 1/3) (1/2, 1/3); + (0,0) (0,0) (1,1)
    # area: (1 - 1/2)(2/3 + 1/3)/2 + (1/2 - 0)(1/3 + 0)/2 = 1/4 + 1/12 = 1/3
    known, correct, unknown = [0.9, 0.8, 0.7], [True, False, True], [0.85, 0.1]
    assert M.oscr_paper(known, correct, unknown) == pytest.approx(1 / 3)
    assert M.oscr(known, correct, unknown) == pytest.approx(0.5)  # the 0.7 known, lost to the lag
    # a tie: argsort decides who comes first (known first: FPR 1 at CCR 0, area 0; unknown first: 0.5)
    first_is_known = np.argsort(np.r_[0.5, 0.5])[0] == 0
    assert M.oscr_paper([0.5], [True], [0.5]) == (0.0 if first_is_known else 0.5)
    assert np.isnan(M.oscr_paper([0.1], [True], []))
    with pytest.raises(ValueError, match="oscr_paper: 1 correctness flags for 2 known scores"):
        M.oscr_paper([0.1, 0.2], [True], [0.3])


@pytest.mark.parametrize("seed", range(6))
def test_paper_oscr_equals_the_described_curve_and_one_one_adds_nothing(seed: int) -> None:
    rng = np.random.default_rng(400 + seed)
    known, unknown = _ints(rng, int(rng.integers(2, 40)), 5) + 1, _ints(rng, int(rng.integers(1, 40)), 5)
    correct = rng.random(len(known)) < 0.7
    value = M.oscr_paper(known, correct, unknown)
    assert value == pytest.approx(_paper_oscr_by_points(known, correct, unknown), abs=1e-12)
    assert value == pytest.approx(_paper_oscr_by_points(known, correct, unknown, add_one_one=False), abs=1e-12)
    assert 0.0 <= value <= 1.0


def test_paper_tnr95_nearest_tpr_first_point_by_hand() -> None:
    known = np.arange(1.0, 21.0)  # 20 knowns: TPR 19/20 == 0.95 exactly
    # the paper's walk reaches TPR 0.95 after rejecting the known 1.0, while 1.5 and 30 are still
    # accepted: TNR 0 there (a later point of the same TPR, after rejecting 1.5, would give 0.5)
    assert M.tnr95_paper(known, [1.5, 30.0]) == 0.0
    assert 1 - M.fpr_at_tpr(known, [1.5, 30.0]) == 0.5  # attrib's threshold 2.0 rejects 1.5
    # 10 knowns: |0.9 - 0.95| < |1.0 - 0.95| in float64, so the point at TPR 0.9 is used: after 0.5
    # and the known 1.0 are rejected, 1.5 and 30 are accepted -> TNR 1/3 (the first TPR-1.0 point: 0)
    assert M.tnr95_paper(np.arange(1.0, 11.0), [0.5, 1.5, 30.0]) == pytest.approx(1 / 3)
    # 7 knowns: TPR 1.0 (0.05 away) is nearer than 6/7 (0.09 away), so the very first point is used,
    # where everything is accepted: TNR 0, not the 1/3 of the first point below 0.95
    assert M.tnr95_paper(np.arange(1.0, 8.0), [0.5, 1.5, 30.0]) == 0.0
    assert M.tnr95_paper([0.5] * 3, [0.5] * 2) == 0.0  # all tied: knowns are rejected first
    assert np.isnan(M.tnr95_paper([], [0.1])) and np.isnan(M.tnr95_paper([0.1], []))


@pytest.mark.parametrize("seed", range(6))
def test_paper_tnr95_follows_the_walk(seed: int) -> None:
    rng = np.random.default_rng(500 + seed)
    known, unknown = _ints(rng, int(rng.integers(1, 60)), 6) + 1, _ints(rng, int(rng.integers(1, 60)), 6)
    pts = np.array(_paper_walk(known, unknown), float)
    at = np.argmin(np.abs(pts[:, 0] / len(known) - 0.95))
    assert M.tnr95_paper(known, unknown) == 1.0 - pts[at, 1] / len(unknown)


def test_evaluate_carries_the_paper_metrics_beside_the_standard_ones() -> None:
    rng = np.random.default_rng(7)
    y = rng.integers(0, 3, 40)
    p = np.where(rng.random(40) < 0.8, y, (y + 1) % 3)
    known, unknown = _ints(rng, 40, 3) + 1, _ints(rng, 25, 3)
    src = np.array(["g1", "g2"] * 12 + ["g1"])
    out = M.evaluate(y, p, known, unknown, np.zeros(25, int), src, [0, 1, 2], ["a", "b", "c"])
    labels = np.r_[np.ones(40), np.zeros(25)]
    assert out["auroc"] == pytest.approx(skm.roc_auc_score(labels, np.r_[known, unknown]), abs=1e-12)
    assert out["auroc_paper"] == M.auroc_paper(known, unknown) < out["auroc"]
    assert out["oscr_paper"] == M.oscr_paper(known, y == p, unknown)
    assert out["tnr95_paper"] == M.tnr95_paper(known, unknown)
    assert out["oscr"] == M.oscr(known, y == p, unknown) and out["fpr95"] == M.fpr_at_tpr(known, unknown)
    assert "groups" not in out


# ------------------------------------------------------------------------------- grouped unknowns
def test_grouped_unknowns_equal_each_group_alone() -> None:
    rng = np.random.default_rng(11)
    y = rng.integers(0, 3, 50)
    p = np.where(rng.random(50) < 0.8, y, (y + 1) % 3)
    known = _ints(rng, 50, 6) + 1
    src = rng.choice(np.array(["sdxl", "dalle", "glide", "vqdm"]), 60)
    unknown = _ints(rng, 60, 6) + 2 * (src == "glide")
    groups = {"seed": ["sdxl", "dalle"], "arch": ["glide"], "dataset": ["dalle", "vqdm"]}
    out = M.evaluate_groups(y, p, known, unknown, src, groups)
    assert list(out) == ["seed", "arch", "dataset", "all"]
    for name, members in [*groups.items(), ("all", ["sdxl", "dalle", "glide", "vqdm"])]:
        keep = np.isin(src, members)
        alone = M.evaluate(y, p, known, unknown[keep], np.zeros(keep.sum(), int), src[keep], [0, 1, 2],
                           ["a", "b", "c"])
        assert set(out[name]) == set(M.OPEN_SET_METRICS) | {"n_unknown"}
        assert out[name] == {**{m: alone[m] for m in M.OPEN_SET_METRICS}, "n_unknown": int(keep.sum())}
    assert len({out[g]["auroc"] for g in out}) == 4  # the groups really differ
    full = M.evaluate(y, p, known, unknown, np.zeros(60, int), src, [0, 1, 2], ["a", "b", "c"],
                      unknown_groups={**groups, "all": ["vqdm", "glide", "dalle", "sdxl"]})
    assert full["groups"] == out and full["auroc"] == out["all"]["auroc"]


def test_grouped_unknowns_refuse_unknown_names() -> None:
    known, unknown, src = [0.9, 0.5], [0.4, 0.6], ["a", "b"]
    with pytest.raises(ValueError, match=r"group 'seed' names zz, but the unknown test samples come from a, b"):
        M.evaluate_groups([0, 1], [0, 1], known, unknown, src, {"seed": ["a", "zz"]})
    with pytest.raises(ValueError, match="not the string 'a'"):
        M.evaluate_groups([0, 1], [0, 1], known, unknown, src, {"seed": "a"})
    with pytest.raises(ValueError, match="group 'all' must name every unknown source"):
        M.evaluate_groups([0, 1], [0, 1], known, unknown, src, {"all": ["a"]})
    with pytest.raises(ValueError, match="names no source"):
        M.evaluate_groups([0, 1], [0, 1], known, unknown, src, {"seed": []})
    with pytest.raises(ValueError, match="1 unknown source names for 2 unknown scores"):
        M.evaluate_groups([0, 1], [0, 1], known, unknown, ["a"], {"seed": ["a"]})
