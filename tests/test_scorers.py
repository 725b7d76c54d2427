"""Open-set scorers: hand-computed cases, independent reference computations (scikit-learn, scipy,
the papers' formulas written out), sanity on known vs unknown points, and the save/load contract."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis
from scipy.special import logsumexp, softmax
from sklearn.covariance import EmpiricalCovariance
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors
from sklearn.utils.validation import check_is_fitted

from attrib.probe.heads import HEADS, KNNHead, LogisticProbe
from attrib.probe.scorers import (GEN, MSP, RMDS, SCORERS, Energy, KNNScore, Mahalanobis, MaxLogit,
                                  NCMScore, OpenSetScorer, ViM)

from test_heads import clusters, refit_from_state


def identity_head(K: int) -> LogisticProbe:
    """A linear head whose logits are the first K input columns (state set directly, as loading does)."""
    head = LogisticProbe()
    head.classes_ = np.arange(K)
    head.n_features_in_ = K
    head.coef_ = np.eye(K)
    head.intercept_ = np.zeros(K)
    return head


LOGITS = np.array([[2.0, 0.0, -1.0], [0.1, 0.2, 0.3], [5.0, 5.0, -3.0]])


def test_softmax_scores_by_hand():
    head = identity_head(3)
    P = softmax(LOGITS, axis=1)
    np.testing.assert_allclose(MSP(head).fit().score_samples(LOGITS), P.max(1))
    np.testing.assert_allclose(MaxLogit(head).score_samples(LOGITS), [2.0, 0.3, 5.0])
    np.testing.assert_allclose(Energy(head).score_samples(LOGITS), logsumexp(LOGITS, axis=1))
    np.testing.assert_allclose(Energy(head, temperature=2.0).score_samples(LOGITS),
                               2.0 * logsumexp(LOGITS / 2.0, axis=1))
    # first row by hand: p = e^2, e^0, e^-1 normalised
    e = np.exp([2.0, 0.0, -1.0])
    assert MSP(head).score_samples(LOGITS[:1])[0] == pytest.approx(e[0] / e.sum())


def test_gen_by_hand_with_top_m():
    head = identity_head(3)
    P = softmax(LOGITS, axis=1)
    g = 0.1
    full = -(P ** g * (1 - P) ** g).sum(1)
    np.testing.assert_allclose(GEN(head).score_samples(LOGITS), full)   # M=100 capped at K=3
    top2 = np.sort(P, axis=1)[:, 1:]
    np.testing.assert_allclose(GEN(head, gamma=g, M=2).score_samples(LOGITS), -(top2 ** g * (1 - top2) ** g).sum(1))
    s = GEN(head).score_samples(np.array([[10.0, 0, 0], [0.0, 0, 0]]))
    assert s[0] > s[1]  # confident beats uniform


def test_vim_against_the_papers_recipe():
    X, y = clusters(n_per_class=80, dim=16, seed=20)
    head = LogisticProbe(C=1.0).fit(X, y)
    vim = ViM(head, dim=6).fit(X)
    # the official recipe, written independently (EmpiricalCovariance + np.linalg.eig)
    u = -np.linalg.pinv(head.coef_) @ head.intercept_
    ec = EmpiricalCovariance(assume_centered=True).fit(X - u)
    vals, vecs = np.linalg.eig(ec.covariance_)
    NS = np.ascontiguousarray((vecs.T[np.argsort(vals * -1)[6:]]).T).real
    logit_train = X @ head.coef_.T + head.intercept_
    alpha = logit_train.max(axis=-1).mean() / np.linalg.norm((X - u) @ NS, axis=-1).mean()
    Q = X[::5] + np.random.default_rng(0).normal(size=X[::5].shape)
    expected = logsumexp(Q @ head.coef_.T + head.intercept_, axis=-1) - alpha * np.linalg.norm((Q - u) @ NS, axis=-1)
    np.testing.assert_allclose(vim.score_samples(Q), expected, rtol=1e-6, atol=1e-6)
    assert vim.alpha_ == pytest.approx(alpha)
    assert ViM(head).fit(X).dim_ == 8  # D < 768: D // 2


def test_vim_needs_a_linear_head():
    X, y = clusters(n_per_class=20)
    knn = KNNHead(k=3).fit(X, y)
    assert not ViM.supports(knn) and ViM.supports(LogisticProbe().fit(X, y))
    with pytest.raises(ValueError, match="does not work with a KNNHead"):
        ViM(knn).fit(X)
    with pytest.raises(ValueError, match="reads a head's outputs"):
        MSP().fit(X, y)
    with pytest.raises(ValueError, match="not fitted"):
        MSP(LogisticProbe()).score_samples(X)


def test_knn_score_is_minus_kth_neighbour_distance():
    X, _ = clusters(n_per_class=30, seed=21)
    Q, _ = clusters(n_per_class=8, seed=22)
    norm = lambda A: A / np.linalg.norm(A, axis=1, keepdims=True)  # noqa: E731
    dist, _ = NearestNeighbors(n_neighbors=5).fit(norm(X)).kneighbors(norm(Q))
    np.testing.assert_allclose(KNNScore(k=5).fit(X).score_samples(Q), -dist[:, -1], atol=1e-5)
    assert KNNScore(k=10_000).fit(X).k_ == len(X)
    # hand case: unit vectors at 0, 60 and 90 degrees; k = 2 from (1, 0): distance to the 60-degree one
    B = np.array([[1.0, 0.0], [0.5, np.sqrt(0.75)], [0.0, 1.0]])
    assert KNNScore(k=2).fit(B).score_samples(np.array([[3.0, 0.0]]))[0] == pytest.approx(-1.0, abs=1e-6)


def test_mahalanobis_against_scipy():
    X, y = clusters(n_per_class=100, dim=6, seed=23)
    m = Mahalanobis(shrinkage=0.0).fit(X, y)
    means = np.stack([X[y == c].mean(0) for c in range(3)])
    R = X - means[y]
    VI = np.linalg.inv(R.T @ R / len(X))
    Q = X[::9] * 1.1
    expected = np.array([-min(scipy_mahalanobis(q, mu, VI) ** 2 for mu in means) for q in Q])
    np.testing.assert_allclose(m.score_samples(Q), expected, rtol=1e-7)
    shrunk = Mahalanobis(shrinkage=0.5).fit(X, y)
    S = R.T @ R / len(X)
    VI2 = np.linalg.inv(0.5 * S + 0.5 * np.trace(S) / 6 * np.eye(6))
    expected2 = np.array([-min(scipy_mahalanobis(q, mu, VI2) ** 2 for mu in means) for q in Q])
    np.testing.assert_allclose(shrunk.score_samples(Q), expected2, rtol=1e-7)
    with pytest.raises(ValueError, match="needs the training labels"):
        Mahalanobis().fit(X)


def test_rmds_is_class_minus_background_distance():
    X, y = clusters(n_per_class=100, dim=6, seed=24)
    r = RMDS(shrinkage=0.0).fit(X, y)
    means = np.stack([X[y == c].mean(0) for c in range(3)])
    R = X - means[y]
    VI = np.linalg.inv(R.T @ R / len(X))
    mu0 = X.mean(0)
    VI0 = np.linalg.inv(np.cov(X.T, bias=True))
    Q = X[::11] - 0.5
    expected = np.array([-min(scipy_mahalanobis(q, mu, VI) ** 2 - scipy_mahalanobis(q, mu0, VI0) ** 2 for mu in means)
                         for q in Q])
    np.testing.assert_allclose(r.score_samples(Q), expected, rtol=1e-6, atol=1e-8)


def test_ncm_score_by_hand():
    X = np.array([[2.0, 0.0], [0.0, 3.0]])
    s = NCMScore().fit(X, np.array(["a", "b"]))
    q = np.array([[1.0, 1.0], [1.0, 0.0], [-1.0, -1.0]])
    np.testing.assert_allclose(s.score_samples(q), [np.sqrt(0.5), 1.0, -np.sqrt(0.5)], atol=1e-12)


def test_known_clusters_score_higher_than_unknowns():
    rng = np.random.default_rng(25)
    D, K = 10, 4
    centres = 6.0 * np.eye(D)[:K]
    y = np.repeat(np.arange(K), 50)
    X = centres[y] + rng.normal(size=(len(y), D))
    Xk = centres[np.repeat(np.arange(K), 20)] + rng.normal(size=(80, D))
    between = centres.mean(0) + rng.normal(size=(80, D))                 # ambiguous: among the classes
    far = 6.0 * np.eye(D)[K + 2] + 3.0 * np.eye(D)[K + 3] + rng.normal(size=(80, D))  # away from all data
    auroc = lambda s, Xu: roc_auc_score(np.r_[np.ones(len(Xk)), np.zeros(len(Xu))],  # noqa: E731
                                        np.r_[s.score_samples(Xk), s.score_samples(Xu)])
    for head_name in ("logreg", "knn", "ncm", "gauss"):
        head = HEADS[head_name]().fit(X, y)
        for name in ("msp", "maxlogit", "energy", "gen"):
            if head_name == "logreg" and name in ("maxlogit", "energy"):
                continue  # a linear head's logits are not confidence between classes
            # a k-NN vote is coarse (a point between classes may still have neighbours of one class)
            assert auroc(SCORERS[name](head).fit(X, y), between) > (0.7 if head_name == "knn" else 0.9), \
                (head_name, name)
    head = LogisticProbe().fit(X, y)
    for name in ("knn", "mahalanobis", "ncm", "vim"):
        assert auroc(SCORERS[name](head).fit(X, y), far) > 0.95, name
    for name in ("mahalanobis", "rmds"):  # (cosine scores see directions: "between" mixes the classes')
        assert auroc(SCORERS[name](head).fit(X, y), between) > 0.95, name


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_scorer_state_round_trip(name):
    X, y = clusters(n_per_class=40, dim=16, seed=26)
    labels = np.array(["real", "sd14", "mj"])[y]
    head = LogisticProbe().fit(X, labels)
    scorer = SCORERS[name](head).fit(X, labels)
    assert isinstance(scorer, OpenSetScorer)
    fresh = refit_from_state(scorer)
    fresh.head = refit_from_state(head)
    Q = X[::3] + 0.5
    np.testing.assert_array_equal(fresh.score_samples(Q), scorer.score_samples(Q))
    assert np.isfinite(scorer.score_samples(Q)).all()


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_unfitted_scorer_or_head_says_it_is_not_fitted(name):
    X, y = clusters(n_per_class=20)
    cls = SCORERS[name]
    if cls.needs_head:  # a head that was never fitted
        with pytest.raises(NotFittedError, match=f"{cls.__name__}: its head LogisticProbe is not fitted yet"):
            cls(head=LogisticProbe()).score_samples(X)
    head = LogisticProbe().fit(X, y)
    scorer = cls(head=head)
    if cls.fit is OpenSetScorer.fit:  # learns nothing of its own: a function of the fitted head
        check_is_fitted(scorer)
        before = scorer.score_samples(X)
    else:
        with pytest.raises(NotFittedError, match=f"{cls.__name__} is not fitted yet: call fit"):
            scorer.score_samples(X)
        with pytest.raises(NotFittedError):
            check_is_fitted(scorer)
        before = None
    scorer.fit(X, y)
    check_is_fitted(scorer)
    after = scorer.score_samples(X)
    assert after.shape == (len(X),) and np.isfinite(after).all()
    if before is not None:
        np.testing.assert_array_equal(before, after)


def test_scorer_base_is_abstract():
    with pytest.raises(TypeError, match="abstract"):
        OpenSetScorer()

    class NoScores(OpenSetScorer):
        pass

    with pytest.raises(TypeError, match="score_samples"):
        NoScores()


def test_registry():
    assert set(SCORERS) == {"msp", "maxlogit", "energy", "gen", "knn", "mahalanobis", "rmds", "ncm", "vim"}
    X, y = clusters(n_per_class=20)
    head = LogisticProbe().fit(X, y)
    with pytest.raises(ValueError, match="12-dimensional"):
        Mahalanobis().fit(X, y).score_samples(X[:, :3])
    assert SCORERS["knn"].needs_head is False and SCORERS["msp"].needs_head is True
    assert all(SCORERS[n].supports(head) for n in SCORERS)
