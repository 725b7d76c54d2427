"""Heads: agreement with scikit-learn / scipy, path fits equal single fits, hand-computed k-NN votes,
and the save/load contract (parameters + public ``_`` attributes re-create a working head)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from attrib.probe.heads import (DEFAULT_CS, HEADS, PAPER_KS, GaussHead, KNNHead, KNNPaperHead, LogisticProbe,
                                NCMHead, ProbeHead)
from attrib.probe.scorers import SCORERS
from attrib.probe.logreg_path import fit_logreg_path


def clusters(n_per_class=60, dim=12, n_classes=3, seed=0, spread=1.0, offset=5.0):
    """Overlapping anisotropic Gaussian classes with one large-magnitude dimension (like CLIP's blocks)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(n_classes, dim)) * 1.2
    scales = np.exp(0.5 * rng.normal(size=dim))
    X = np.concatenate([means[c] + spread * rng.normal(size=(n_per_class, dim)) * scales for c in range(n_classes)])
    X[:, 0] += offset
    y = np.repeat(np.arange(n_classes), n_per_class)
    return X, y


def sklearn_lr(X, y, C):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=C, tol=1e-12, max_iter=20000).fit(X, y)


def refit_from_state(est):
    """What saving does: parameters (minus the head) plus every public attribute ending in '_'."""
    params = {k: v for k, v in est.get_params(deep=False).items() if k != "head"}
    state = {k: v for k, v in vars(est).items() if k.endswith("_") and not k.startswith("_")}
    for k, v in state.items():
        ok = isinstance(v, (np.ndarray, int, float, bool, str, np.generic)) or (
            isinstance(v, list) and all(isinstance(x, (int, float, str)) for x in v))
        assert ok, f"{type(est).__name__}.{k} is a {type(v).__name__}: not saveable as .npz/JSON"
        assert not (isinstance(v, np.ndarray) and v.dtype == object), f"{k} is an object array"
    fresh = type(est)(**params)
    for k, v in state.items():
        setattr(fresh, k, v.copy() if isinstance(v, np.ndarray) else v)
    return fresh


# ------------------------------------------------------------------------------- logistic probe
@pytest.mark.parametrize("C", [1e-3, 0.1, 10.0])
def test_logreg_matches_sklearn_multinomial(C):
    X, y = clusters()
    head = LogisticProbe(C=C, dtype="float64", tol=1e-13).fit(X, y)
    ref = sklearn_lr(X, y, C)
    assert head.converged_
    np.testing.assert_allclose(head.predict_proba(X), ref.predict_proba(X), atol=2e-6)
    np.testing.assert_allclose(head.coef_ - head.coef_.mean(0), ref.coef_ - ref.coef_.mean(0),
                               atol=2e-3 * np.abs(ref.coef_).max())
    assert (head.predict(X) == ref.predict(X)).all()


def test_logreg_few_shot_fewer_rows_than_dimensions():
    X, y = clusters(n_per_class=60, dim=40, seed=14)
    few = np.r_[0:3, 60:63, 120:123]  # 3 shots x 3 classes in 40 dims: solved in the rows' span
    for C in (1e-2, 10.0):
        head = LogisticProbe(C=C, dtype="float64", tol=1e-13).fit(X[few], y[few])
        ref = sklearn_lr(X[few], y[few], C)
        np.testing.assert_allclose(head.predict_proba(X), ref.predict_proba(X), atol=1e-5)


def test_logreg_default_float32_is_close_to_sklearn():
    X, y = clusters(seed=3)
    for C in (1e-2, 1.0):
        P = LogisticProbe(C=C).fit(X, y).predict_proba(X)
        np.testing.assert_allclose(P, sklearn_lr(X, y, C).predict_proba(X), atol=2e-3)


def test_logreg_binary_uses_sklearns_C():
    X, y = clusters(n_classes=2, seed=1)
    labels = np.array(["real", "fake"])[y]  # string labels, sorted like scikit-learn
    for C in (1e-2, 1.0):
        head = LogisticProbe(C=C, dtype="float64", tol=1e-13).fit(X, labels)
        ref = sklearn_lr(X, labels, C)
        assert list(head.classes_) == list(ref.classes_) == ["fake", "real"]
        np.testing.assert_allclose(head.predict_proba(X), ref.predict_proba(X), atol=2e-6)
        assert head.coef_.shape == (2, X.shape[1])


def test_logreg_standardize_equals_sklearn_on_scaled_features():
    X, y = clusters(seed=2)
    scaler = StandardScaler().fit(X)
    head = LogisticProbe(C=0.05, standardize=True, dtype="float64", tol=1e-13).fit(X, y)
    ref = sklearn_lr(scaler.transform(X), y, 0.05)
    np.testing.assert_allclose(head.predict_proba(X), ref.predict_proba(scaler.transform(X)), atol=1e-5)
    raw = LogisticProbe(C=0.05, dtype="float64", tol=1e-13).fit(X, y)
    assert np.abs(raw.predict_proba(X) - head.predict_proba(X)).max() > 1e-3  # a different penalty


def test_logreg_path_equals_single_fits_and_default_grid():
    X, y = clusters(seed=4)
    Cs = [1e-4, 3e-2, 1.0, 1e3]
    path = LogisticProbe.fit_path(X, y, Cs, dtype="float64", tol=1e-13)
    assert [h.C for h in path] == Cs
    for head, C in zip(path, Cs):
        single = LogisticProbe(C=C, dtype="float64", tol=1e-13).fit(X, y)
        np.testing.assert_allclose(head.predict_proba(X), single.predict_proba(X), atol=1e-6)
    assert LogisticProbe.default_path == tuple(np.logspace(-6, 5, 45)) and len(DEFAULT_CS) == 45
    assert len(LogisticProbe.fit_path(X[::4], y[::4])) == 45


def test_logreg_path_outputs_from_one_product_equal_each_heads_own():
    """Model selection takes every path head's validation outputs from one product; they must be the
    outputs each head gives by itself (a wrong slice would hand one C's outputs to another)."""
    X, y = clusters(n_classes=4, dim=20)
    X_val = (clusters(n_classes=4, dim=20, seed=3)[0] * 1.3).astype(np.float32)
    heads = LogisticProbe.fit_path(X.astype(np.float32), y, np.logspace(-3, 3, 7))
    shared = LogisticProbe.path_predict_with_proba(heads, X_val)
    assert len(shared) == len(heads)
    for head, (pred, proba) in zip(heads, shared):
        own_pred, own_proba = head.predict_with_proba(X_val)
        np.testing.assert_array_equal(pred, own_pred)
        np.testing.assert_allclose(proba, own_proba, rtol=1e-12, atol=1e-15)
    assert len({tuple(p.round(6).ravel()[:8]) for _, p in shared}) == len(heads)  # the C really differ

    class Shifted(LogisticProbe):  # another decision function: each head answers for itself
        def decision_function(self, X):
            return super().decision_function(X) + np.arange(len(self.classes_))

    shifted = Shifted.fit_path(X, y, [0.1, 10.0])
    for head, (_, proba) in zip(shifted, Shifted.path_predict_with_proba(shifted, X_val)):
        np.testing.assert_array_equal(proba, head.predict_proba(X_val))
    with pytest.raises(ValueError, match="LogisticProbe"):
        LogisticProbe.path_predict_with_proba(heads, X_val[:, :5])
    with pytest.raises(NotFittedError, match="not fitted"):
        LogisticProbe.path_predict_with_proba([heads[0], LogisticProbe()], X_val)


def test_affine_is_the_plain_product_in_the_same_precision():
    from attrib.probe.geometry import affine

    rng = np.random.default_rng(0)
    X = rng.normal(size=(1100, 16)).astype(np.float32)
    for W, b in ((rng.normal(size=(3, 16)), rng.normal(size=3)),
                 (rng.normal(size=(3, 16)).astype(np.float32), rng.normal(size=3).astype(np.float32))):
        out, plain = affine(X, W, b, chunk=256), X @ W.T + b
        assert out.dtype == plain.dtype and out.shape == (1100, 3)
        np.testing.assert_allclose(out, plain, rtol=1e-6 if out.dtype == np.float32 else 1e-12)


def test_logreg_path_in_groups_warm_started_equals_one_batch():
    X, y = clusters(seed=5)
    Cs = np.logspace(-3, 3, 7)

    def probs(path, j):
        P = np.exp(X @ path.coef[j].T + path.intercept[j])
        return P / P.sum(1, keepdims=True)

    one = fit_logreg_path(X, y, 3, Cs, dtype="float64", tol=1e-13, group_size=len(Cs))
    for kw in ({"group_size": 1}, {"max_batch_elems": 2 * len(X) * 3}):  # memory cap: groups of 2
        groups = fit_logreg_path(X, y, 3, Cs[::-1], dtype="float64", tol=1e-13, **kw)
        assert groups.converged.all()
        for j in range(len(Cs)):
            np.testing.assert_allclose(probs(one, j), probs(groups, -1 - j), atol=1e-6)
    assert one.converged.all()


def test_logreg_preconditioner_choices_do_not_change_the_solution():
    X, y = clusters(seed=15)
    Cs = [1e-2, 1.0]
    ref = fit_logreg_path(X, y, 3, Cs, dtype="float64", tol=1e-13)
    for kw in ({"max_rotation_dim": 4},        # diagonal preconditioner in the feature axes
               {"curvature_rows": 17},         # curvature from a subsample
               {"standardize": False, "seed": 3, "curvature_rows": 50}):
        alt = fit_logreg_path(X, y, 3, Cs, dtype="float64", tol=1e-13, **kw)
        np.testing.assert_allclose(alt.coef, ref.coef, atol=1e-4 * np.abs(ref.coef).max())
    few = np.r_[0:4, 60:64, 120:124]              # fewer rows than dims, and more rows than curvature_rows
    Xw = np.hstack([X, X ** 2])[few]
    a = fit_logreg_path(Xw, y[few], 3, Cs, dtype="float64", tol=1e-13)
    b = fit_logreg_path(Xw, y[few], 3, Cs, dtype="float64", tol=1e-13, curvature_rows=5, max_rotation_dim=1)
    np.testing.assert_allclose(a.coef, b.coef, atol=1e-4 * np.abs(a.coef).max())


def test_logreg_leaves_torch_threads_as_they_were():
    import torch

    before = torch.get_num_threads()
    X, y = clusters()
    LogisticProbe.fit_path(X, y, [0.1, 1.0])  # a small problem: solved on one thread
    assert torch.get_num_threads() == before


def test_logreg_reports_max_iter():
    X, y = clusters()
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        head = LogisticProbe(C=100.0, max_iter=2).fit(X, y)
    assert head.n_iter_ == 2 and not head.converged_


def test_logreg_input_errors_name_the_problem():
    X, y = clusters()
    with pytest.raises(ValueError, match="at least two classes"):
        LogisticProbe().fit(X, np.zeros(len(X)))
    Xbad = X.copy()
    Xbad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        LogisticProbe().fit(Xbad, y)
    with pytest.raises(ValueError, match="one label per training row"):
        LogisticProbe().fit(X, y[:-1])
    head = LogisticProbe().fit(X, y)
    with pytest.raises(ValueError, match="12-dimensional"):
        head.predict(X[:, :5])
    with pytest.raises(ValueError, match="C values"):
        LogisticProbe(C=0.0).fit(X, y)


def test_path_values_are_checked_as_given():
    """Errors name the values the user gave: the two-class probe halves C internally, and only the bad
    values are listed. ``check_path`` is what a study runs on ``--grid`` before any fit."""
    X, y = clusters(n_classes=2, seed=1)
    with pytest.raises(ValueError, match=r"C values must be finite numbers > 0, got -1$"):
        LogisticProbe(C=-1).fit(X, y)
    with pytest.raises(ValueError, match=r"got 0, -0.5$"):
        LogisticProbe.fit_path(X, y, [1, 0, -0.5])
    with pytest.raises(ValueError, match=r"got nan, inf$"):
        LogisticProbe.check_path([0.01, float("nan"), float("inf")])
    with pytest.raises(ValueError, match=r"got -2$"):
        fit_logreg_path(X, y, 2, [1.0, -2])
    with pytest.raises(ValueError, match=r"k values must be positive integers, got 2.5, 0, 2.0, True$"):
        KNNHead.check_path([1, 2.5, 0, 2.0, True])
    with pytest.raises(ValueError, match="got none"):
        KNNHead.check_path([])
    LogisticProbe.check_path([1e-6, 3, np.float64(1e5)])
    KNNHead.check_path([1, np.int64(20)])
    NCMHead.check_path([-1, "anything"])  # no path: nothing to refuse


# ------------------------------------------------------------------------------------------ k-NN
def test_knn_similarity_weighted_vote_by_hand():
    # training directions at known angles from the query (1, 0): cos = 0.9, 0.8, 0.7, -1
    def unit(cos):
        return [cos, np.sqrt(1 - cos ** 2)]
    X = np.array([unit(0.9), unit(0.8), unit(0.7), unit(-1.0)]) * [[3.0], [0.5], [7.0], [1.0]]  # norms don't matter
    y = np.array(["A", "B", "B", "A"])
    q = np.array([[2.0, 0.0]])
    head = KNNHead(k=3, temperature=0.07).fit(X, y)
    a, b = np.exp(0.9 / 0.07), np.exp(0.8 / 0.07) + np.exp(0.7 / 0.07)
    np.testing.assert_allclose(head.decision_function(q), np.log([[a, b]]), rtol=1e-6)
    np.testing.assert_allclose(head.predict_proba(q), [[a / (a + b), b / (a + b)]], rtol=1e-5)
    assert head.predict(q)[0] == "A"                     # one close neighbour outvotes two farther ones
    assert KNNHead(k=3, temperature=10.0).fit(X, y).predict(q)[0] == "B"  # a flat vote is a majority vote
    with pytest.raises(ValueError, match="at least two classes"):
        KNNHead(k=1).fit(X[1:3], y[1:3])


def test_knn_neighbours_match_sklearn_and_k_is_capped():
    X, y = clusters(n_per_class=20, seed=6)
    Q, _ = clusters(n_per_class=5, seed=7)
    head = KNNHead(k=7).fit(X, y)
    sims, idx = head.neighbours(Q)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    dist, ref_idx = NearestNeighbors(n_neighbors=7, metric="cosine").fit(Xn).kneighbors(Q)
    np.testing.assert_allclose(sims, 1 - dist, atol=1e-5)
    assert (idx == ref_idx).mean() > 0.99  # float32 vs float64 may swap exact ties only
    assert KNNHead(k=500).fit(X, y).k_ == len(X)
    with pytest.raises(ValueError, match="positive integer"):
        KNNHead(k=0).fit(X, y)


def _count_searches(monkeypatch) -> list[int]:
    """The k of every neighbour search made from now on."""
    import attrib.probe.geometry as geometry

    calls, real = [], geometry.topk_cosine
    monkeypatch.setattr(geometry, "topk_cosine", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    return calls


def test_knn_path_shares_one_search_and_equals_single_fits(monkeypatch):
    X, y = clusters(n_per_class=30, seed=8)
    Q, _ = clusters(n_per_class=10, seed=9)
    calls = _count_searches(monkeypatch)
    path = KNNHead.fit_path(X, y)
    assert [h.k for h in path] == list(range(1, 21))
    outs = [h.decision_function(Q) for h in path]
    assert calls == [20]  # one search, for the largest k, serves the whole path
    for h, out in zip(path, outs):
        np.testing.assert_allclose(out, KNNHead(k=h.k).fit(X, y).decision_function(Q), rtol=1e-6)


def _unit(cos):
    return [cos, np.sqrt(1 - cos ** 2)]


def test_knn_paper_sums_cosines_by_hand():
    # the KNNHead case above: cos to the query 0.9 (A), 0.8 (B), 0.7 (B), -1 (A)
    X = np.array([_unit(0.9), _unit(0.8), _unit(0.7), _unit(-1.0)]) * [[3.0], [0.5], [7.0], [1.0]]
    y = np.array(["A", "B", "B", "A"])
    q = np.array([[2.0, 0.0]])
    head = KNNPaperHead(k=3).fit(X, y)
    np.testing.assert_allclose(head.decision_function(q), [[0.9, 1.5]], rtol=1e-6)
    np.testing.assert_allclose(head.predict_proba(q), [[0.9 / 2.4, 1.5 / 2.4]], rtol=1e-6)
    assert head.predict(q)[0] == "B"  # no exponential: two fair neighbours outweigh one close one
    pred, proba = head.predict_with_proba(q)
    assert pred.tolist() == ["B"] and np.array_equal(proba, head.predict_proba(q))
    # k=4 takes the opposite A (cos -1): A's sum is -0.1; the paper would give A -0.1/1.4 and B 1.5/1.4,
    # attrib clips A at 0
    four = KNNPaperHead(k=4).fit(X, y)
    np.testing.assert_allclose(four.decision_function(q), [[-0.1, 1.5]], rtol=1e-5)
    np.testing.assert_allclose(four.predict_proba(q), [[0.0, 1.0]])


def test_knn_paper_rows_without_a_positive_sum_are_uniform():
    X = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    y = np.array([0, 1, 2])
    head = KNNPaperHead(k=2).fit(X, y)
    q = np.array([[-1.0, -0.01],    # neighbours at cos ~ -0.01 (class 2) and ~ -0.81 (class 1): all negative
                  [1.0, -1.0]])     # cos 0.71 (class 0) and 0.14 (class 1)
    sums = head.decision_function(q)
    assert (sums[0] <= 0).all() and np.argmax(sums[0]) == 0  # class 0 has no neighbour: its sum is 0
    np.testing.assert_allclose(head.predict_proba(q)[0], [1 / 3] * 3)  # resembles nothing: least confident
    assert head.predict(q).tolist() == [2, 0]  # the nearest neighbour's class; then the largest sum
    P = head.predict_proba(q)[1]
    np.testing.assert_allclose(P, [sums[1, 0] / sums[1].sum(), sums[1, 1] / sums[1].sum(), 0.0], rtol=1e-6)
    # a query orthogonal to every neighbour: sum 0, the uniform distribution as well
    orth = KNNPaperHead(k=1).fit(np.array([[1.0, 0.0], [2.0, 0.0]]), np.array([0, 1]))
    np.testing.assert_allclose(orth.predict_proba(np.array([[0.0, 3.0]])), [[0.5, 0.5]])


def test_knn_paper_path_is_the_papers_and_shares_one_search(monkeypatch):
    assert PAPER_KS == tuple(np.unique(np.linspace(1, 20, 10, dtype=int)).tolist())
    assert KNNPaperHead.default_path == PAPER_KS and HEADS["knn-paper"] is KNNPaperHead
    X, y = clusters(n_per_class=30, seed=8)
    Q, _ = clusters(n_per_class=10, seed=9)
    calls = _count_searches(monkeypatch)
    path = KNNPaperHead.fit_path(X, y)
    assert [h.k for h in path] == list(PAPER_KS)
    outs = [h.predict_proba(Q) for h in path]
    assert calls == [20]
    for h, out in zip(path, outs):
        np.testing.assert_allclose(out, KNNPaperHead(k=h.k).fit(X, y).predict_proba(Q), rtol=1e-6)
    assert KNNPaperHead().get_params() == {"k": 10}  # no temperature: the paper has none
    with pytest.raises(ValueError, match="positive integer"):
        KNNPaperHead(k=2.0).fit(X, y)


def test_every_scorer_works_with_knn_paper_or_refuses_it():
    X, y = clusters(n_per_class=30, seed=15)
    Q = np.r_[X[::5], -X[:5]]  # include queries whose neighbours have negative cosines
    head = KNNPaperHead(k=5).fit(X, y)
    for name, cls in SCORERS.items():
        if not cls.supports(head):
            with pytest.raises(ValueError, match="does not work with a KNNPaperHead"):
                cls(head).fit(X, y)
            continue
        scores = cls(head).fit(X, y).score_samples(Q)
        assert scores.shape == (len(Q),) and np.isfinite(scores).all(), name
    assert not SCORERS["vim"].supports(head)
    np.testing.assert_array_equal(SCORERS["msp"](head).fit(X, y).score_samples(Q), head.predict_proba(Q).max(1))


# ------------------------------------------------------------------------------- NCM and Gauss
def test_ncm_by_hand():
    X = np.array([[1.0, 0.0], [3.0, 0.1], [0.0, 2.0], [0.2, 5.0]])
    y = np.array([0, 0, 1, 1])
    head = NCMHead(temperature=0.5).fit(X, y)
    u = X / np.linalg.norm(X, axis=1, keepdims=True)
    m = np.stack([u[:2].mean(0), u[2:].mean(0)])
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    q = np.array([[1.0, 1.0], [-1.0, 0.2]])
    np.testing.assert_allclose(head.cosine(q), (q / np.linalg.norm(q, axis=1, keepdims=True)) @ m.T)
    np.testing.assert_allclose(head.decision_function(q), head.cosine(q) / 0.5)
    assert head.predict(np.array([[5.0, 0.3], [0.1, 1.0]])).tolist() == [0, 1]


def test_gauss_is_a_gaussian_log_joint_density():
    X, y = clusters(n_per_class=40, seed=10)
    keep = np.r_[0:40, 40:70, 80:120]  # unequal priors
    X, y = X[keep], y[keep]
    head = GaussHead(shrinkage=0.3).fit(X, y)
    means = np.stack([X[y == c].mean(0) for c in range(3)])
    R = X - means[y]
    S = R.T @ R / len(X)
    cov = 0.7 * S + 0.3 * np.trace(S) / S.shape[0] * np.eye(S.shape[0])
    Q = X[::7] + 0.3
    expected = np.stack([multivariate_normal(means[c], cov).logpdf(Q) + np.log(np.mean(y == c))
                         for c in range(3)], axis=1)
    np.testing.assert_allclose(head.decision_function(Q), expected, rtol=1e-8, atol=1e-8)
    assert head.shrinkage_ == 0.3


def test_gauss_without_shrinkage_is_sklearn_lda():
    X, y = clusters(n_per_class=80, seed=11)
    head = GaussHead(shrinkage=0.0).fit(X, y)
    lda = LinearDiscriminantAnalysis(solver="lsqr").fit(X, y)
    np.testing.assert_allclose(head.predict_proba(X), lda.predict_proba(X), atol=1e-8)


def test_gauss_auto_shrinkage_handles_few_shots():
    X, y = clusters(n_per_class=60, dim=40, seed=12)
    one_shot = np.r_[0, 60, 120]
    head = GaussHead().fit(X[one_shot], y[one_shot])   # no within-class spread: Euclidean distances
    assert head.shrinkage_ == 1.0 and np.isfinite(head.decision_function(X)).all()
    d = ((X[:, None, :] - X[one_shot][None]) ** 2).sum(-1)
    assert (head.predict(X) == d.argmin(1)).all()
    two_shot = np.r_[0, 1, 60, 61, 120, 121]
    few = GaussHead().fit(X[two_shot], y[two_shot])
    many = GaussHead().fit(X, y)
    assert 0 < many.shrinkage_ < few.shrinkage_ <= 1
    with pytest.raises(ValueError, match="shrinkage"):
        GaussHead(shrinkage=2.0).fit(X, y)


# ------------------------------------------------------------------------------- common contract
@pytest.mark.parametrize("name", ["logreg", "knn", "ncm", "gauss", "knn-paper"])
def test_head_state_round_trip(name):
    X, y = clusters(seed=13)
    labels = np.array(["real", "sd14", "mj"])[y]
    head = HEADS[name]().fit(X, labels)
    assert isinstance(head, ProbeHead)
    fresh = refit_from_state(head)
    np.testing.assert_array_equal(fresh.decision_function(X), head.decision_function(X))
    np.testing.assert_array_equal(fresh.predict(X), head.predict(X))
    assert (head.predict(X) == labels).mean() > 0.8


OUTPUTS = ("decision_function", "predict", "predict_proba", "predict_with_proba")


@pytest.mark.parametrize("name", sorted(HEADS))
def test_unfitted_head_says_it_is_not_fitted(name):
    X, y = clusters(n_per_class=10)
    head = HEADS[name]()
    for method in OUTPUTS:
        with pytest.raises(NotFittedError, match=f"{type(head).__name__} is not fitted yet: call fit"):
            getattr(head, method)(X)
    with pytest.raises(NotFittedError):
        check_is_fitted(head)
    head.fit(X, y)
    check_is_fitted(head)
    for method in OUTPUTS:
        getattr(head, method)(X)


def test_head_base_is_abstract():
    with pytest.raises(TypeError, match="abstract"):
        ProbeHead()

    class NoScores(ProbeHead):
        def fit(self, X, y):
            return self

    with pytest.raises(TypeError, match="decision_function"):
        NoScores()


def test_registry_and_paths():
    assert set(HEADS) == {"logreg", "knn", "ncm", "gauss", "knn-paper"}
    assert HEADS["logreg"].path_param == "C" and HEADS["knn"].path_param == "k"
    assert HEADS["knn"].default_path == tuple(range(1, 21))
    X, y = clusters(n_per_class=10)
    for name in ("ncm", "gauss"):
        assert HEADS[name].path_param is None
        (only,) = HEADS[name].fit_path(X, y)
        np.testing.assert_allclose(only.decision_function(X), HEADS[name]().fit(X, y).decision_function(X))


def test_logreg_path_given_the_validation_set_solves_only_the_C_that_can_win_to_tol(monkeypatch):
    """LogisticProbe's screen: the C whose validation accuracy is within screen_margin (at least 5 images)
    of the best are solved to tol, the others only to screen_tol; the choice is the tight path's."""
    from attrib.probe import protocol as P

    X, y = clusters(n_per_class=500, dim=20, n_classes=4, seed=8, spread=2.5)
    Xt, yt, Xv, yv = X[::2].astype(np.float32), y[::2], X[1::2].astype(np.float32), y[1::2]
    Cs = np.logspace(-5, 3, 17)
    screened = P.fit_candidates(LogisticProbe, Xt, yt, Xv, yv, Cs, by_accuracy=True)
    tight = P.fit_candidates(LogisticProbe, Xt, yt, Xv, yv, Cs)
    correct = np.array([round(c.val_accuracy * len(yv)) for c in screened])
    near = correct >= correct.max() - 5                      # 0.001 x 1,000 images is less than 5
    solved = np.array([c.head.solved_tol_ for c in screened])
    # every C that is close is solved to tol (a C close at first may fall behind once refined), and many
    # far ones only to screen_tol
    assert (solved[near] == 1e-6).all() and (solved == 1e-4).sum() >= 5 and set(solved) == {1e-6, 1e-4}
    assert all(c.head.solved_tol_ == 1e-6 for c in tight)
    chosen, ref = P.select_clean(screened, "C"), P.select_clean(tight, "C")
    assert chosen.index == ref.index
    assert abs(chosen.val["val_accuracy"] - ref.val["val_accuracy"]) <= 2 / len(yv)
    # the screen counts the validation images a block of rows at a time: any block size, the same choice
    import attrib.probe.heads as H

    monkeypatch.setattr(H, "_SCREEN_ROWS", 37)
    blocks = LogisticProbe.fit_path(Xt, yt, Cs, validation=(Xv, yv))
    assert all(np.array_equal(h.coef_, c.head.coef_) and h.solved_tol_ == c.head.solved_tol_
               for h, c in zip(blocks, screened))
    # screening off: every C to tol, the path without a validation set exactly
    off = LogisticProbe.fit_path(Xt, yt, Cs, validation=(Xv, yv), screen_tol=None)
    assert all(h.solved_tol_ == 1e-6 and np.array_equal(h.coef_, c.head.coef_) for h, c in zip(off, tight))


def test_logreg_screen_refuses_a_validation_set_that_does_not_fit():
    X, y = clusters()
    with pytest.raises(ValueError, match="validation features have 5 dimensions, the training features 12"):
        LogisticProbe.fit_path(X, y, [0.1, 1.0], validation=(X[:, :5], y))
    with pytest.raises(ValueError, match="one label per validation row: 180 rows"):
        LogisticProbe.fit_path(X, y, [0.1, 1.0], validation=(X, y[:3]))


@pytest.mark.parametrize("params, match", [({"screen_tol": 0}, "screen_tol=0"), ({"screen_tol": "x"}, "screen_tol='x'"),
                                           ({"screen_tol": float("inf")}, "screen_tol=inf"),
                                           ({"screen_margin": 1.0}, "screen_margin=1.0"),
                                           ({"screen_margin": -0.1}, "screen_margin=-0.1"),
                                           ({"products": "mkl"}, "products='mkl': use 'auto'")])
def test_logreg_screen_settings_are_checked(params, match):
    with pytest.raises(ValueError, match=match):
        LogisticProbe(**params).check_params()
