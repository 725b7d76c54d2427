"""Open-set scores: how likely a sample comes from a KNOWN generator (higher = more likely known).

Each scorer is a small estimator: ``__init__`` takes hyperparameters and the fitted head it reads,
``fit(X, y)`` learns whatever statistics it needs from the training features, and
``score_samples(X)`` returns one score per row. ``supports(head)`` says whether a scorer can work with a
given head (e.g. a score built from a linear head's weights cannot use a k-NN head).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

from attrib.probe.heads import ProbeHead, softmax


class OpenSetScorer(BaseEstimator):
    """Base of all scorers."""

    def __init__(self, head: ProbeHead | None = None):
        self.head = head

    @classmethod
    def supports(cls, head: ProbeHead) -> bool:
        return True

    def fit(self, X: np.ndarray | None = None, y: np.ndarray | None = None) -> "OpenSetScorer":
        return self

    def score_samples(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class MSP(OpenSetScorer):
    """Maximum softmax probability of the head (Hendrycks & Gimpel 2017): the paper's score."""

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        return softmax(self.head.decision_function(X)).max(axis=1)


SCORERS: dict[str, type[OpenSetScorer]] = {"msp": MSP}
