"""Open-set scores: how likely a sample comes from a KNOWN generator (higher = more likely known).

Each scorer is a small estimator: ``__init__`` takes the fitted head it reads (if any) and its
hyperparameters, ``fit(X, y)`` learns whatever statistics it needs from the training features (the ones
the head was trained on), and ``score_samples(X)`` returns one score per row. ``supports(head)`` says
whether a scorer can work with a given head (ViM needs a linear head's weights).

Every score is a function of the cached features and the fitted head only (no input perturbation, no
back-propagation, no outlier data). Fitted state is numpy arrays and numbers in public attributes ending
in ``_``: a scorer re-created with the same parameters (and head) and those attributes set scores
exactly like the fitted one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from attrib.probe.geometry import (as_features, check_width, cosine_class_means, l2_normalize, label_indices,
                                   logsumexp, mahalanobis_sq, tied_gaussian, topk_cosine)
from attrib.probe.heads import ProbeHead


class OpenSetScorer(BaseEstimator, ABC):
    """Base of all scorers; ``needs_head``: the score reads the head's outputs.

    Subclasses implement ``score_samples``, and ``fit`` when they learn statistics of their own. An
    unfitted scorer (or one whose head is unfitted) asked for scores raises scikit-learn's
    ``NotFittedError`` (a ValueError and an AttributeError) saying so, through :meth:`_check_head`
    and :meth:`_input`.
    """

    needs_head: ClassVar[bool] = True

    def __init__(self, head: ProbeHead | None = None):
        self.head = head

    @classmethod
    def supports(cls, head: ProbeHead) -> bool:
        return True

    def fit(self, X: np.ndarray | None = None, y: np.ndarray | None = None) -> "OpenSetScorer":
        self._check_head()
        return self

    @abstractmethod
    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """One score per row of ``X``: higher = more likely from a known generator."""

    def __sklearn_is_fitted__(self) -> bool:
        """Whether ``fit`` has run, for :func:`sklearn.utils.validation.check_is_fitted`.

        A scorer that overrides ``fit`` learns statistics of its own (public attributes ending in
        ``_``), so it is fitted once it holds some. One that keeps the base ``fit`` (MSP, MaxLogit,
        Energy, GEN) is a function of its head's outputs: it is fitted when its head is, which also
        holds for such a scorer loaded from a saved head, whose state is empty.
        """
        if self.needs_head and not _fitted(self.head):
            return False
        if type(self).fit is OpenSetScorer.fit:
            return True
        return any(k.endswith("_") and not k.startswith("__") for k in vars(self))

    def _check_head(self) -> ProbeHead:
        name = type(self).__name__
        if self.head is None:
            raise ValueError(f"{name} reads a head's outputs: create it as {name}(head=fitted_head)")
        check_is_fitted(self.head, msg=f"{name}: its head %(name)s is not fitted yet; fit the head first")
        if not self.supports(self.head):
            raise ValueError(f"{name} does not work with a {type(self.head).__name__} head")
        return self.head

    def _fit_features(self, X, y=None, need_y: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Validated training features and, if given, labels as class indices 0..K-1."""
        X = as_features(X, "training features")
        self.n_features_in_ = X.shape[1]
        if y is None:
            if need_y:
                raise ValueError(f"{type(self).__name__}.fit needs the training labels: fit(X, y)")
            return X, None
        return X, label_indices(y, len(X))[1]

    def _input(self, X: np.ndarray) -> np.ndarray:
        """Features a fitted scorer can take (NotFittedError before fit, ValueError for a wrong width)."""
        check_is_fitted(self, msg="%(name)s is not fitted yet: call fit(X, y) with the training features first")
        X = as_features(X)
        if hasattr(self, "n_features_in_"):
            check_width(X, self.n_features_in_, type(self).__name__)
        return X


def _fitted(est: BaseEstimator | None) -> bool:
    try:
        check_is_fitted(est)
    except (NotFittedError, TypeError):  # TypeError: None, or not an estimator
        return False
    return True


# --------------------------------------------------------------------------- from the head's outputs
class MSP(OpenSetScorer):
    """Maximum softmax probability (Hendrycks & Gimpel, ICLR 2017): the paper's score.

    ``max_k softmax(logits)_k`` from the head's ``predict_proba``.
    """

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        return self._check_head().predict_proba(X).max(axis=1)


class MaxLogit(OpenSetScorer):
    """Maximum logit (Hendrycks et al., "Scaling out-of-distribution detection", ICML 2022): ``max_k logit_k``."""

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        return self._check_head().decision_function(X).max(axis=1)


class Energy(OpenSetScorer):
    """Negative free energy (Liu et al., "Energy-based out-of-distribution detection", NeurIPS 2020).

    ``T * logsumexp(logits / T)`` with temperature T = 1 (the paper's choice for inference); this is
    ``-E(x)``, so higher = more likely known.
    """

    def __init__(self, head: ProbeHead | None = None, temperature: float = 1.0):
        self.head = head
        self.temperature = temperature

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        T = float(self.temperature)
        return T * logsumexp(self._check_head().decision_function(X) / T)


class GEN(OpenSetScorer):
    """Generalized entropy (Liu, Lochman & Zach, "GEN: pushing the limits of softmax-based
    out-of-distribution detection", CVPR 2023).

    ``-sum_{j <= M} p_(j)^gamma (1 - p_(j))^gamma`` over the M largest softmax probabilities, with the
    paper's defaults gamma = 0.1 and M = 100 (M is capped at the number of classes). A confident,
    low-entropy prediction scores high.
    """

    def __init__(self, head: ProbeHead | None = None, gamma: float = 0.1, M: int = 100):
        self.head = head
        self.gamma = gamma
        self.M = M

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        if not (isinstance(self.M, (int, np.integer)) and self.M >= 1):
            raise ValueError(f"M={self.M!r}: use a positive integer")
        P = np.sort(self._check_head().predict_proba(X), axis=1)[:, -int(self.M):]
        g = float(self.gamma)
        return -np.sum(P ** g * (1.0 - P) ** g, axis=1)


class ViM(OpenSetScorer):
    """Virtual-logit matching (Wang et al., "ViM: out-of-distribution with virtual-logit matching", CVPR 2022).

    Needs a linear head (logits = W x + b). Conventions of the paper's code: the origin is
    ``o = -pinv(W) b``; the principal subspace is spanned by the ``dim`` leading eigenvectors of the
    uncentred covariance of the training features ``x - o``; the residual is the projection of
    ``x - o`` onto the remaining eigenvectors; the virtual logit is ``alpha ||residual||`` with
    ``alpha = mean(max logit) / mean(||residual||)`` over the training set. Score:
    ``logsumexp(logits) - alpha ||residual||`` (monotone in one minus the virtual class's softmax
    probability). ``dim=None``: the paper's rule, 1000 if D >= 2048, 512 if D >= 768, else D // 2.
    """

    def __init__(self, head: ProbeHead | None = None, dim: int | None = None):
        self.head = head
        self.dim = dim

    @classmethod
    def supports(cls, head: ProbeHead) -> bool:
        return bool(getattr(head, "linear", False))

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> "ViM":
        head = self._check_head()
        X, _ = self._fit_features(X)
        D = X.shape[1]
        dim = self.dim if self.dim is not None else (1000 if D >= 2048 else 512 if D >= 768 else D // 2)
        if not 1 <= dim < D:
            raise ValueError(f"ViM dim={dim}: the principal subspace must leave a residual, use 1 <= dim < {D}")
        self.dim_ = int(dim)
        W, b = np.asarray(head.coef_, dtype=np.float64), np.asarray(head.intercept_, dtype=np.float64)
        self.origin_ = -np.linalg.pinv(W) @ b
        Xc = X.astype(np.float64) - self.origin_
        eigvals, eigvecs = np.linalg.eigh(Xc.T @ Xc / len(Xc))
        self.basis_ = np.ascontiguousarray(eigvecs[:, np.argsort(-eigvals)[self.dim_:]])  # (D, D - dim)
        residual = np.linalg.norm(Xc @ self.basis_, axis=1)
        self.alpha_ = float(head.decision_function(X).max(axis=1).mean() / max(residual.mean(), 1e-300))
        return self

    def virtual_logit(self, X: np.ndarray) -> np.ndarray:
        X = self._input(X)
        return self.alpha_ * np.linalg.norm((X.astype(np.float64) - self.origin_) @ self.basis_, axis=1)

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        return logsumexp(self._check_head().decision_function(X)) - self.virtual_logit(X)


# ------------------------------------------------------------------------ from the training features
class KNNScore(OpenSetScorer):
    """Deep nearest neighbours (Sun et al., "Out-of-distribution detection with deep nearest
    neighbors", ICML 2022).

    Features are L2-normalised; the score is minus the Euclidean distance to the k-th nearest training
    feature, ``-||z - z_(k)||`` (equivalently ``-sqrt(2 - 2 cos)``). Default k = 50, the paper's choice
    for CIFAR-10 (5,000 training images per class); k is capped at the number of training images
    (``k_``). The training bank is stored, normalised, as float32.
    """

    needs_head = False

    def __init__(self, head: ProbeHead | None = None, k: int = 50):
        self.head = head
        self.k = k

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> "KNNScore":
        if isinstance(self.k, bool) or not (isinstance(self.k, (int, np.integer)) and self.k >= 1):
            raise ValueError(f"k={self.k!r}: use a positive integer")
        X, _ = self._fit_features(X)
        self.bank_ = l2_normalize(X.astype(np.float32))
        self.k_ = int(min(self.k, len(X)))
        return self

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        sims, _ = topk_cosine(self._input(X), self.bank_, self.k_)
        return -np.sqrt(np.maximum(2.0 - 2.0 * sims[:, -1].astype(np.float64), 0.0))


class NCMScore(OpenSetScorer):
    """Cosine similarity to the nearest class mean: ``max_k cos(x, mean_k)``.

    Means of the L2-normalised training features (as the NCM head computes them).
    """

    needs_head = False

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> "NCMScore":
        X, y_idx = self._fit_features(X, y, need_y=True)
        self.means_ = cosine_class_means(X, y_idx, int(y_idx.max()) + 1)
        return self

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        return (l2_normalize(self._input(X).astype(np.float64)) @ self.means_.T).max(axis=1)


class Mahalanobis(OpenSetScorer):
    """Mahalanobis distance to the closest class (Lee et al., "A simple unified framework for detecting
    out-of-distribution samples and adversarial attacks", NeurIPS 2018).

    Class means and one shared (tied) covariance from the training features; score
    ``-min_k (x - mu_k)^T Sigma^-1 (x - mu_k)``, on the given features only (no input pre-processing,
    no ensemble over layers). One deviation: the covariance is shrunk (``shrinkage="auto"``,
    Ledoit-Wolf, as for the Gaussian head) because with few shots in 768 dimensions the empirical one
    is singular; ``shrinkage=0`` (``--param mahalanobis.shrinkage=0``) gives the paper's plain pooled
    covariance, pseudo-inverted where singular, as its code (scikit-learn's ``EmpiricalCovariance``) does.
    """

    needs_head = False

    def __init__(self, head: ProbeHead | None = None, shrinkage: str | float = "auto"):
        self.head = head
        self.shrinkage = shrinkage

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> "Mahalanobis":
        X, y_idx = self._fit_features(X, y, need_y=True)
        self.means_, self.precision_, _, self.shrinkage_ = tied_gaussian(X, y_idx, int(y_idx.max()) + 1,
                                                                         self.shrinkage)
        return self

    def distances(self, X: np.ndarray) -> np.ndarray:
        """(n, K) squared Mahalanobis distance to every class mean."""
        return mahalanobis_sq(self._input(X), self.means_, self.precision_)

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        return -self.distances(X).min(axis=1)


class RMDS(Mahalanobis):
    """Relative Mahalanobis distance (Ren et al., "A simple fix to Mahalanobis distance for improving
    near-OOD detection", 2021).

    ``RMD_k(x) = MD_k(x) - MD_0(x)``: the class-conditional squared Mahalanobis distance (class means,
    shared covariance, as :class:`Mahalanobis`) minus the distance under one Gaussian fitted to all
    training features (global mean and covariance). Score ``-min_k RMD_k(x)``. Both covariances are
    shrunk the same way (``shrinkage``).
    """

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> "RMDS":
        super().fit(X, y)
        means, self.background_precision_, _, self.background_shrinkage_ = tied_gaussian(
            X, np.zeros(len(X), dtype=np.int64), 1, self.shrinkage)
        self.background_mean_ = means[0]
        return self

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        X = self._input(X)
        background = mahalanobis_sq(X, self.background_mean_[None, :], self.background_precision_)
        return -(self.distances(X) - background).min(axis=1)


SCORERS: dict[str, type[OpenSetScorer]] = {
    "msp": MSP, "maxlogit": MaxLogit, "energy": Energy, "gen": GEN, "knn": KNNScore,
    "mahalanobis": Mahalanobis, "rmds": RMDS, "ncm": NCMScore, "vim": ViM,
}
