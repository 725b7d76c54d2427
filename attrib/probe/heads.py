"""Classification heads on cached features, as scikit-learn-style estimators.

Hyperparameters live in ``__init__``; ``fit(X, y)`` learns state (names ending in ``_``) and returns
self. Heads expose ``decision_function(X)`` (logits or similarities, one column per class) so that the
open-set scorers in :mod:`attrib.probe.scorers` can work from any of them.

Model selection sweeps one hyperparameter per head (``path_param``: C for the logistic probe, k for
k-NN). ``fit_path`` returns one fitted head per value; heads override it when the whole path is cheaper
to fit at once than value by value.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

DEFAULT_CS = np.logspace(-6, 5, 45)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class ProbeHead(ClassifierMixin, BaseEstimator):
    """Base of all heads: subclasses implement ``fit`` and ``decision_function``."""

    path_param: ClassVar[str | None] = None  # the hyperparameter model selection sweeps
    default_path: ClassVar[Sequence] = ()

    def decision_function(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return softmax(self.decision_function(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]

    @classmethod
    def fit_path(cls, X: np.ndarray, y: np.ndarray, values: Sequence | None = None,
                 **params) -> list["ProbeHead"]:
        """One head fitted per value of ``path_param`` (all other hyperparameters from ``params``)."""
        if cls.path_param is None:
            return [cls(**params).fit(X, y)]
        values = cls.default_path if values is None else values
        return [cls(**{**params, cls.path_param: v}).fit(X, y) for v in values]


class LogisticProbe(ProbeHead):
    """L2-regularised multinomial logistic regression (a linear probe), inverse strength ``C``.

    Features are standardised with training statistics first: CLIP's intermediate blocks have a few
    dimensions with very large activations, and without scaling the optimiser crawls.
    """

    path_param = "C"
    default_path = tuple(DEFAULT_CS)

    def __init__(self, C: float = 1.0, standardize: bool = True, max_iter: int = 1000, tol: float = 1e-6):
        self.C = C
        self.standardize = standardize
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X: np.ndarray, y: np.ndarray) -> "LogisticProbe":
        X = np.asarray(X, dtype=np.float64)
        self.classes_ = np.unique(y)
        if self.standardize:
            self.mean_ = X.mean(axis=0)
            self.scale_ = X.std(axis=0) + 1e-6
        else:
            self.mean_ = np.zeros(X.shape[1])
            self.scale_ = np.ones(X.shape[1])
        lr = LogisticRegression(C=self.C, max_iter=self.max_iter, tol=self.tol)
        lr.fit((X - self.mean_) / self.scale_, y)
        coef, intercept = lr.coef_, lr.intercept_
        if len(self.classes_) == 2:  # sklearn stores one row for binary problems
            coef = np.vstack([-coef / 2, coef / 2])
            intercept = np.r_[-intercept / 2, intercept / 2]
        self.coef_ = coef
        self.intercept_ = intercept
        self.n_iter_ = int(np.max(lr.n_iter_))
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        Z = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
        return Z @ self.coef_.T + self.intercept_



HEADS: dict[str, type[ProbeHead]] = {"logreg": LogisticProbe}
