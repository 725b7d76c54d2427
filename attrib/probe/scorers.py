"""Open-set scores: how likely a sample comes from a KNOWN generator (higher = more likely known).

Each scorer is a small estimator: ``__init__`` takes hyperparameters and the fitted head it reads,
``fit(X, y)`` learns whatever statistics it needs from the training features, and
``score_samples(X)`` returns one score per row.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class MSP(BaseEstimator):
    """Maximum softmax probability of the head (Hendrycks & Gimpel 2017): the paper's score."""

    def __init__(self, head=None):
        self.head = head

    def fit(self, X: np.ndarray | None = None, y: np.ndarray | None = None) -> "MSP":
        return self

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        return softmax(self.head.decision_function(X)).max(axis=1)


SCORERS = {"msp": MSP}
