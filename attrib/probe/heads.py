"""Classification heads on cached features, as scikit-learn-style estimators.

Hyperparameters live in ``__init__``; ``fit(X, y)`` learns state (public names ending in ``_``: numpy
arrays, numbers, short lists) and returns self. A head re-created with the same parameters and those
attributes set predicts exactly like the fitted one — that is how heads are saved (no pickle).

Heads expose ``decision_function(X)`` (class scores, "logits": one column per class, in the order of
``classes_``) and ``predict_proba(X)`` (softmax of the logits), so the open-set scorers in
:mod:`attrib.probe.scorers` work from any of them.

Model selection sweeps one hyperparameter per head (``path_param``: C for the logistic probe, k for
k-NN). ``fit_path`` returns one fitted head per value; heads override it when the whole path is cheaper
to fit at once than value by value.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from typing import ClassVar, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from attrib.probe.geometry import (NeighbourCache, affine, as_features, check_width, class_columns, cosine_class_means,
                                   l2_normalize, label_indices, mahalanobis_sq, softmax, tied_gaussian, topk_cosine)
from attrib.probe.logreg_args import check_Cs, check_device, check_products, check_screen

DEFAULT_CS = np.logspace(-6, 5, 45)
_SCREEN_MIN_IMAGES = 5  # LogisticProbe's screen: C this close to the best (or screen_margin) are solved to tol
# validation rows whose logits for every C the screen holds at once (45 C x 5 classes: 29 MB), for it runs
# while the solver holds its copy of the training rows: 300k validation rows at once would add 0.5 GB
_SCREEN_ROWS = 16384
DEFAULT_KS = tuple(range(1, 21))
PAPER_KS = (1, 3, 5, 7, 9, 11, 13, 15, 17, 20)  # the paper's k sweep: unique(linspace(1, 20, 10) as int)

__all__ = ["DEFAULT_CS", "DEFAULT_KS", "HEADS", "PAPER_KS", "GaussHead", "KNNHead", "KNNPaperHead", "LogisticProbe",
           "NCMHead", "ProbeHead", "softmax"]


class ProbeHead(ClassifierMixin, BaseEstimator, ABC):
    """Base of all heads: subclasses implement ``fit`` and ``decision_function``.

    An unfitted head asked for outputs raises scikit-learn's ``NotFittedError`` (a ValueError and an
    AttributeError) saying so: ``predict``, ``predict_proba`` and ``predict_with_proba`` check it here,
    and the heads' ``decision_function`` through :meth:`_input`.
    """

    path_param: ClassVar[str | None] = None  # the hyperparameter model selection sweeps
    default_path: ClassVar[Sequence] = ()
    linear: ClassVar[bool] = False  # decision_function(X) == X @ coef_.T + intercept_ (ViM needs it)
    # fit_path takes validation=(X_val, y_val), the set the caller will choose among the heads with by
    # accuracy, and may use it to save work (LogisticProbe solves the values that cannot win less precisely)
    path_uses_validation: ClassVar[bool] = False

    @abstractmethod
    def fit(self, X: np.ndarray, y: np.ndarray) -> "ProbeHead":
        """Learn the head's state (public attributes ending in ``_``, ``classes_`` among them); return self."""

    @abstractmethod
    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """(n, K) class scores ("logits"), one column per class of ``classes_``."""

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        self._check_fitted()
        return softmax(self.decision_function(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The class with the largest score; ties go to the first class in ``classes_``."""
        self._check_fitted()
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]

    def predict_with_proba(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(predict(X), predict_proba(X))`` from one ``decision_function`` pass: model selection
        needs both on the same validation set for every head of a path."""
        self._check_fitted()
        return self._from_logits(self.decision_function(X))

    def _from_logits(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(predictions, probabilities) of logits ``Z``: one place for both ways of getting them
        (:meth:`predict_with_proba`, and a path's shared product)."""
        return self.classes_[np.argmax(Z, axis=1)], softmax(Z)

    @classmethod
    def path_predict_with_proba(cls, heads: Sequence["ProbeHead"],
                                X: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`predict_with_proba` of every head of one path (:meth:`fit_path`) on the same ``X``:
        model selection asks it of all of them. Heads that can share the work override this."""
        return [head.predict_with_proba(X) for head in heads]

    def check_params(self) -> None:
        """Raise ValueError naming a hyperparameter (set in ``__init__``) this head cannot be fitted with
        on this machine: called on the heads a study's ``--param`` configures before it starts, for the
        reason given in :meth:`check_path`. The base accepts anything."""

    @classmethod
    def check_path(cls, values: Sequence) -> None:
        """Raise ValueError naming the values of ``path_param`` this head cannot be fitted with.

        Called on a ``--grid`` before a study starts: a bad value would otherwise fail every line of the
        study one by one, after the features were read. The base accepts anything (a head added at run
        time reports a bad value when it is fitted).
        """

    @classmethod
    def fit_path(cls, X: np.ndarray, y: np.ndarray, values: Sequence | None = None,
                 **params) -> list["ProbeHead"]:
        """One head fitted per value of ``path_param`` (all other hyperparameters from ``params``)."""
        if cls.path_param is None:
            return [cls(**params).fit(X, y)]
        values = cls.default_path if values is None else values
        return [cls(**{**params, cls.path_param: v}).fit(X, y) for v in values]

    # helpers shared by the heads
    def _fit_input(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Validated features, and labels as indices into ``classes_`` (set here)."""
        X = as_features(X, "training features")
        self.classes_, y_idx = label_indices(y, len(X))
        if len(self.classes_) < 2:
            raise ValueError(f"a classifier needs at least two classes, the training labels hold "
                             f"{self.classes_.tolist()}")
        return X, y_idx

    def _check_fitted(self) -> None:
        check_is_fitted(self, msg=f"%(name)s is not fitted yet: call fit(X, y) (or {type(self).__name__}.fit_path) "
                        "before asking it for scores or predictions")

    def _input(self, X: np.ndarray) -> np.ndarray:
        """Features a fitted head can take (NotFittedError before fit, ValueError for a wrong width)."""
        self._check_fitted()
        X = as_features(X)
        check_width(X, self.n_features_in_, type(self).__name__)
        return X


class LogisticProbe(ProbeHead):
    """L2-regularised multinomial logistic regression (the paper's linear probe), inverse strength ``C``.

    Same objective as scikit-learn's ``LogisticRegression(C=C)`` (lbfgs): ``C * sum_i log-loss +
    ||W||^2 / 2``, intercept not penalised, K weight vectors (so C values are directly comparable to the
    paper's code). For two classes scikit-learn fits one weight vector; the same optimum is obtained here
    and stored as two opposite rows, so C and probabilities still match scikit-learn.

    Solved by :func:`attrib.probe.logreg_path.fit_logreg_path`, a batched preconditioned L-BFGS that fits
    the whole C path at once (``fit_path``), tens of times faster than one scikit-learn fit per C.

    ``standardize=False`` (default) fits raw features, as the paper's code does: the penalty then acts on
    the same weights, so the chosen C is comparable to the paper's. Standardising (per-dimension z-score
    with training statistics) changes the penalty — it shrinks the weights of CLIP's few huge-activation
    dimensions much less — and so changes which C wins; it is offered for experiments. The solver is
    preconditioned either way, so standardising is not needed for speed.

    ``tol`` and ``dtype`` set the solve's precision (``dtype="float64", tol=1e-8`` for about 1e-7 of
    the optimum at every C, at 2.6x the cost). When ``fit_path`` is given the validation set the caller
    chooses C on, only the C values whose validation accuracy is within ``screen_margin`` of the best
    (and never fewer than 5 images) are solved to ``tol``; the others stop at ``screen_tol``, about a
    quarter less work for the path (``screen_tol=None`` solves every C to ``tol``; ``solved_tol_`` says
    which tolerance a head got). ``device`` where it runs (``"cuda"``, or ``"auto"`` for
    CUDA when torch sees it; from the command line ``--param logreg.device=cuda``). The fitted head is
    numpy either way, and a saved head loads and predicts on any machine. ``products="blas"`` runs the
    CPU's products on torch's BLAS instead of oneDNN (:mod:`attrib.probe.onednn`): slower, computed as
    attrib did before it used oneDNN.
    """

    path_param = "C"
    default_path = tuple(DEFAULT_CS)
    linear = True
    path_uses_validation = True

    def __init__(self, C: float = 1.0, standardize: bool = False, tol: float = 1e-6, max_iter: int = 1000,
                 dtype: str = "float32", device: str = "cpu", screen_tol: float | None = 1e-4,
                 screen_margin: float = 0.001, products: str = "auto"):
        self.C = C
        self.standardize = standardize
        self.tol = tol
        self.max_iter = max_iter
        self.dtype = dtype
        self.device = device
        self.screen_tol = screen_tol
        self.screen_margin = screen_margin
        self.products = products

    def fit(self, X: np.ndarray, y: np.ndarray) -> "LogisticProbe":
        return self._fit_many(X, y, [self.C], [self])[0]

    def check_params(self) -> None:
        check_device(self.device)
        check_screen(self.screen_tol, self.screen_margin)
        check_products(self.products)

    @classmethod
    def check_path(cls, values: Sequence) -> None:
        check_Cs(values)

    @classmethod
    def fit_path(cls, X: np.ndarray, y: np.ndarray, values: Sequence | None = None, *,
                 validation: tuple[np.ndarray, np.ndarray] | None = None, **params) -> list["LogisticProbe"]:
        """All C at once (one batched solve); element j equals ``LogisticProbe(C=values[j]).fit(X, y)``
        up to the solver tolerance (``screen_tol`` for the C that ``validation`` rules out)."""
        values = list(cls.default_path if values is None else values)
        heads = [cls(**{**params, "C": C}) for C in values]
        return heads[0]._fit_many(X, y, values, heads, validation)

    def _fit_many(self, X, y, Cs, heads: list["LogisticProbe"],
                  validation: tuple[np.ndarray, np.ndarray] | None = None) -> list["LogisticProbe"]:
        check_Cs(Cs)  # the caller's values, before the two-class case halves them
        self.check_params()  # before any work
        X, y_idx = self._fit_input(X, y)
        classes = self.classes_
        K = len(classes)
        Cs = np.asarray(Cs, dtype=np.float64)
        # two classes: scikit-learn's single-vector objective at C is the symmetric two-row one at C / 2
        # (rows -v/2 and v/2 pay ||v||^2 / 4, half the single vector's penalty)
        from attrib.probe.logreg_path import fit_logreg_path  # torch, only where heads are fitted

        path = fit_logreg_path(X, y_idx, K, Cs * (0.5 if K == 2 else 1.0), standardize=self.standardize,
                               tol=self.tol, max_iter=self.max_iter, dtype=self.dtype, device=self.device,
                               screen=self._screen(validation, classes, len(Cs), X.shape[1]), products=self.products)
        stalled = [float(C) for C, it, ok in zip(Cs, path.n_iter, path.converged) if not ok and it >= self.max_iter]
        if stalled:
            warnings.warn(f"logistic probe: max_iter={self.max_iter} reached before convergence for C in "
                          f"{stalled}; raise max_iter", ConvergenceWarning, stacklevel=3)
        for j, head in enumerate(heads):
            head.classes_ = classes
            head.n_features_in_ = X.shape[1]
            head.coef_ = path.coef[j]
            head.intercept_ = path.intercept[j]
            head.n_iter_ = int(path.n_iter[j])
            head.converged_ = bool(path.converged[j])
            head.solved_tol_ = float(path.solved_tol[j])
        return heads

    def _screen(self, validation: tuple[np.ndarray, np.ndarray] | None, classes: np.ndarray, n_values: int,
                width: int):
        """The solver's :class:`~attrib.probe.logreg_path.Screen` for this validation set: the C whose
        validation accuracy is within ``screen_margin`` of the best (at least 5 images) are solved to
        ``tol``. None (every C to ``tol``) without a validation set, with one C, or with screening off."""
        if validation is None or n_values < 2 or self.screen_tol is None or not len(validation[1]):
            return None
        from attrib.probe.logreg_path import Screen

        X_val = as_features(validation[0], "validation features")
        if X_val.shape[1] != width:
            raise ValueError(f"validation features have {X_val.shape[1]} dimensions, the training features {width}: "
                             "give the validation rows of the same block(s)")
        y_val = np.asarray(validation[1])
        if y_val.shape != (len(X_val),):
            raise ValueError(f"need one label per validation row: {len(X_val)} rows, labels of shape {y_val.shape}")
        truth = class_columns(classes, y_val)  # -1, a class the heads do not know, is never right
        slack = max(self.screen_margin * len(y_val), _SCREEN_MIN_IMAGES)

        def choose(coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
            m, K, D = coef.shape
            W, b = coef.reshape(m * K, D), intercept.reshape(m * K)
            correct = np.zeros(m, dtype=np.int64)
            for a in range(0, len(X_val), _SCREEN_ROWS):  # the logits of every C, a bounded block at a time
                logits = affine(X_val[a:a + _SCREEN_ROWS], W, b).reshape(-1, m, K)
                correct += (logits.argmax(axis=2) == truth[a:a + _SCREEN_ROWS, None]).sum(axis=0)
            return np.flatnonzero(correct >= correct.max() - slack)

        return Screen(float(self.screen_tol), choose)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return affine(self._input(X), self.coef_, self.intercept_)

    @classmethod
    def path_predict_with_proba(cls, heads: Sequence[ProbeHead],
                                X: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """The same outputs as each head's own :meth:`predict_with_proba`, from one product for the whole
        path: a 45-value path's validation logits take one (n, D) x (D, 45 K) product instead of 45 narrow
        ones (5,000 x 768 rows: about 55 ms against 260 ms on one core), with the same numbers."""
        own = (cls.decision_function is LogisticProbe.decision_function
               and cls.predict_with_proba is ProbeHead.predict_with_proba)
        if not own or len(heads) < 2:
            return super().path_predict_with_proba(heads, X)
        for head in heads:
            head._check_fitted()
        if len({len(h.classes_) for h in heads}) != 1:
            return super().path_predict_with_proba(heads, X)
        X = heads[0]._input(X)
        for head in heads[1:]:
            check_width(X, head.n_features_in_, cls.__name__)
        K = len(heads[0].classes_)
        logits = affine(X, np.concatenate([h.coef_ for h in heads]), np.concatenate([h.intercept_ for h in heads]))
        return [head._from_logits(logits[:, j * K:(j + 1) * K]) for j, head in enumerate(heads)]


class KNNHead(ProbeHead):
    """k nearest neighbours on L2-normalised features with a similarity-weighted vote.

    Each of the k most cosine-similar training images votes for its class with weight
    ``exp(cos / temperature)`` (the weighted k-NN of Wu et al. 2018 and DINO's k-NN evaluation, Caron et
    al. 2021, temperature 0.07), so one very close neighbour can outvote several distant ones. The
    logits are the log of the class votes: ``softmax`` of them is the normalised vote, ``predict`` the
    class with the largest vote (ties: first class). A class with no vote gets log of the smallest
    positive float (about -745): effectively -inf, but finite.

    Fitting stores the normalised training features (``bank_``, float32) and their class indices.
    """

    path_param = "k"
    default_path = DEFAULT_KS

    def __init__(self, k: int = 10, temperature: float = 0.07):
        self.k = k
        self.temperature = temperature

    @staticmethod
    def _bad_k(k: object) -> bool:
        """Not a positive integer; a float, even 2.0, is refused too: k counts neighbours."""
        return isinstance(k, bool) or not (isinstance(k, (int, np.integer)) and k >= 1)

    @classmethod
    def check_path(cls, values: Sequence) -> None:
        bad = [v for v in values if cls._bad_k(v)]
        if bad or not len(values):
            raise ValueError(f"k values must be positive integers, got {', '.join(map(str, bad)) or 'none'}")

    def _check_params(self) -> None:
        if self._bad_k(self.k):
            raise ValueError(f"k={self.k!r}: use a positive integer")
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature!r}: use a positive number")

    def fit(self, X: np.ndarray, y: np.ndarray) -> "KNNHead":
        self._check_params()
        X, y_idx = self._fit_input(X, y)
        self.n_features_in_ = X.shape[1]
        self.bank_ = l2_normalize(X.astype(np.float32))
        self.labels_ = y_idx.astype(np.int64)
        self.k_ = int(min(self.k, len(X)))  # k larger than the training set: every training image votes
        return self

    @classmethod
    def fit_path(cls, X: np.ndarray, y: np.ndarray, values: Sequence | None = None,
                 **params) -> list["KNNHead"]:
        """One head per k sharing one bank and one neighbour search per query array (for the largest k)."""
        values = list(cls.default_path if values is None else values)
        first = cls(**{**params, "k": values[0]}).fit(X, y)
        heads = [cls(**{**params, "k": v})._share_fit(first) for v in values]
        cache = NeighbourCache(max(h.k_ for h in heads))
        for head in heads:
            head._neighbours = cache
        return heads

    def _share_fit(self, other: "KNNHead") -> "KNNHead":
        """Fitted from another fitted head's training bank (shared, not copied)."""
        self._check_params()
        self.classes_, self.n_features_in_ = other.classes_, other.n_features_in_
        self.bank_, self.labels_ = other.bank_, other.labels_
        self.k_ = int(min(self.k, len(self.bank_)))
        return self

    def neighbours(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cosine similarities, training indices) of the k_ nearest training images, nearest first."""
        X = self._input(X)
        cache = getattr(self, "_neighbours", None)
        if cache is not None and cache.k >= self.k_:
            sims, idx = cache.search(X, self.bank_)
            return sims[:, :self.k_], idx[:, :self.k_]
        return topk_cosine(X, self.bank_, self.k_)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        sims, idx = self.neighbours(X)
        logits = sims.astype(np.float64) / self.temperature
        top = logits.max(axis=1, keepdims=True)
        weights = np.exp(logits - top)                       # (n, k), the largest is 1
        votes = np.zeros((len(sims), len(self.classes_)))
        np.add.at(votes, (np.arange(len(sims))[:, None], self.labels_[idx]), weights)
        return np.log(np.maximum(votes, np.finfo(np.float64).tiny)) + top


class KNNPaperHead(KNNHead):
    """The k-NN of Cioni et al.'s code (``models/knn.py``): summed cosine similarities, normalised.

    Same neighbours as :class:`KNNHead` (L2-normalised features, the k largest inner products, one
    shared search along a k path), but the class probability is the sum of the cosine similarities of
    the neighbours of that class divided by the sum over all classes: no temperature, no exponential.
    The default k path is the paper's sweep, ``np.unique(np.linspace(1, 20, 10, dtype=int))``.
    ``decision_function`` returns the per-class similarity sums (in [-k, k]; 0 for a class with no
    neighbour) and ``predict`` their argmax (ties: first class), as the paper's argmax of probabilities.

    Cosines can be negative, and the paper's code does not guard against it: it leaves a row whose sum
    is 0 unnormalised, divides a row with a negative sum by it (flipping the order of the classes), and
    turns a negative class sum beside positive ones into a negative "probability" (NaN under GEN).
    Here ``predict_proba`` clips class sums at 0 before normalising, and a row with no positive class
    sum (every neighbour at cosine <= 0: the sample resembles no training image) gets the uniform
    distribution, the least confident one, so MSP ranks it as most likely unknown; its predicted class
    is then that of its nearest neighbour. This equals the paper's output whenever that output is a
    probability distribution (no negative class sum), which is the case for CLIP features, whose
    nearest neighbours have clearly positive cosines.
    """

    default_path = PAPER_KS

    def __init__(self, k: int = 10):
        self.k = k

    def _check_params(self) -> None:
        if self._bad_k(self.k):
            raise ValueError(f"k={self.k!r}: use a positive integer")

    def _votes(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(per-class cosine sums (n, K), class index of each row's nearest neighbour)."""
        sims, idx = self.neighbours(X)
        labels = self.labels_[idx]
        sums = np.zeros((len(sims), len(self.classes_)))
        np.add.at(sums, (np.arange(len(sims))[:, None], labels), sims.astype(np.float64))
        return sums, labels[:, 0]

    def _predict_from(self, sums: np.ndarray, nearest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        votes = np.maximum(sums, 0.0)
        total = votes.sum(axis=1, keepdims=True)
        some = total[:, 0] > 0
        proba = np.where(some[:, None], votes / np.where(some[:, None], total, 1.0), 1.0 / votes.shape[1])
        return self.classes_[np.where(some, np.argmax(sums, axis=1), nearest)], proba

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return self._votes(X)[0]

    def predict_with_proba(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._predict_from(*self._votes(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_with_proba(X)[0]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.predict_with_proba(X)[1]


class NCMHead(ProbeHead):
    """Nearest class mean by cosine similarity.

    Class means are the means of the L2-normalised training features, normalised again; the logits are
    ``cos(x, mean_k) / temperature`` (temperature 0.07 as for k-NN, so that the softmax used by MSP and
    GEN is not flat on [-1, 1] cosines; the predicted class does not depend on it).
    """

    def __init__(self, temperature: float = 0.07):
        self.temperature = temperature

    def fit(self, X: np.ndarray, y: np.ndarray) -> "NCMHead":
        X, y_idx = self._fit_input(X, y)
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature!r}: use a positive number")
        self.n_features_in_ = X.shape[1]
        self.means_ = cosine_class_means(X, y_idx, len(self.classes_))
        return self

    def cosine(self, X: np.ndarray) -> np.ndarray:
        """(n, K) cosine similarity to every class mean."""
        return l2_normalize(self._input(X).astype(np.float64)) @ self.means_.T

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return self.cosine(X) / self.temperature


class GaussHead(ProbeHead):
    """Class-conditional Gaussians with one shared covariance (linear discriminant analysis).

    Logits are the log joint densities ``log N(x; mu_k, Sigma) + log prior_k``: their argmax is LDA's
    prediction and their softmax its posterior, and, unlike LDA's linear decision function, they keep the
    ``x^T Sigma^-1 x`` term, so Energy on this head is the log density of x under the class mixture.
    Priors are the training class frequencies.

    The covariance is the pooled within-class covariance shrunk towards a scaled identity,
    ``shrinkage="auto"`` choosing the amount by Ledoit-Wolf (see
    :func:`attrib.probe.geometry.shrunk_covariance`): with 768 dimensions and few shots per class the
    empirical covariance is singular, and a fixed amount would be wrong for either few or many shots.
    """

    def __init__(self, shrinkage: str | float = "auto"):
        self.shrinkage = shrinkage

    def fit(self, X: np.ndarray, y: np.ndarray) -> "GaussHead":
        X, y_idx = self._fit_input(X, y)
        K = len(self.classes_)
        self.n_features_in_ = X.shape[1]
        self.means_, self.precision_, self.logdet_, self.shrinkage_ = tied_gaussian(X, y_idx, K, self.shrinkage)
        self.log_prior_ = np.log(np.bincount(y_idx, minlength=K) / len(y_idx))
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        d2 = mahalanobis_sq(self._input(X), self.means_, self.precision_)
        const = -0.5 * (self.logdet_ + self.n_features_in_ * np.log(2 * np.pi))
        return -0.5 * d2 + const + self.log_prior_


HEADS: dict[str, type[ProbeHead]] = {"logreg": LogisticProbe, "knn": KNNHead, "ncm": NCMHead,
                                     "gauss": GaussHead, "knn-paper": KNNPaperHead}
