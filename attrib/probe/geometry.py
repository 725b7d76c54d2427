"""Feature-space geometry shared by heads and open-set scorers: cosine neighbours, class means, Gaussians.

One implementation of each statistic, so that a head and a score that both speak of "the class means" or
"the shared covariance" compute exactly the same thing.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
from sklearn.covariance import ledoit_wolf_shrinkage


def as_features(X: np.ndarray, what: str = "features") -> np.ndarray:
    """A finite 2-D float array, or a ValueError that says what is wrong."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array (n, D), got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float64)
    if not all_finite(X):
        raise ValueError(f"{what} contain NaN or inf; check the feature cache (`attrib cache verify`)")
    return X


def all_finite(X: np.ndarray, chunk: int = 65536) -> bool:
    """``np.isfinite(X).all()`` a block of rows at a time: the one-shot form allocates a boolean array
    as large as X (a gigabyte for a million-row block)."""
    return all(bool(np.isfinite(X[a:a + chunk]).all()) for a in range(0, len(X), chunk))


def affine(X: np.ndarray, W: np.ndarray, b: np.ndarray, chunk: int = 512) -> np.ndarray:
    """``X @ W.T + b``, in the dtype numpy gives that expression, a block of rows at a time.

    Why in blocks: numpy multiplies float32 features by float64 weights by first converting the whole
    of X to a float64 copy, twice X's size; for a linear head's few output columns that copy, not the
    product, is most of the time (a 20,000 x 768 block: 46 ms whole, about 20 ms in blocks of 512 rows
    that stay in the cache, the same numbers bit for bit on the machine measured).
    """
    dtype = np.result_type(X.dtype, W.dtype, b.dtype)
    out = np.empty((len(X), len(W)), dtype=dtype)
    WT = np.ascontiguousarray(W.T, dtype=dtype)
    for a in range(0, len(X), chunk):
        np.matmul(X[a:a + chunk].astype(dtype, copy=False), WT, out=out[a:a + chunk])
    out += b
    return out


def column_mean_std(X: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation in float64, two passes over blocks of rows: ``X.std``
    would hold a float64 copy of the whole array (and ``E[x^2] - mean^2`` cancels on CLIP's
    huge-offset dimensions)."""
    mean = X.mean(axis=0, dtype=np.float64)
    ss = np.zeros(X.shape[1])
    for a in range(0, len(X), chunk):
        ss += ((X[a:a + chunk] - mean) ** 2).sum(axis=0)
    return mean, np.sqrt(ss / max(len(X), 1))


def label_indices(y: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(sorted classes, each row's index into them), or a ValueError if there is not one label per row."""
    y = np.asarray(y)
    if y.shape != (n_rows,):
        raise ValueError(f"need one label per training row: {n_rows} rows, labels of shape {y.shape}")
    return np.unique(y, return_inverse=True)


def class_columns(classes: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each label's column in a head's outputs (its index in the sorted ``classes``), -1 for a label that
    is not one of them (model selection scores such a row as wrong, never as an error)."""
    classes, y = np.asarray(classes), np.asarray(y)
    col = np.clip(np.searchsorted(classes, y), 0, max(len(classes) - 1, 0))
    return np.where(classes[col] == y, col, -1) if len(classes) else np.full(len(y), -1)


def check_width(X: np.ndarray, width: int, who: str) -> None:
    if X.shape[1] != width:
        raise ValueError(f"{who} was fitted on {width}-dimensional features, got {X.shape[1]}; "
                         "score features of the same block(s) it was trained on")


def l2_normalize(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    X = np.asarray(X)
    norm = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norm, np.finfo(X.dtype if np.issubdtype(X.dtype, np.floating) else np.float64).tiny)


def logsumexp(Z: np.ndarray, axis: int = 1) -> np.ndarray:
    mx = np.max(Z, axis=axis, keepdims=True)
    return (mx + np.log(np.sum(np.exp(Z - mx), axis=axis, keepdims=True))).squeeze(axis)


def softmax(Z: np.ndarray) -> np.ndarray:
    Z = Z - Z.max(axis=1, keepdims=True)
    E = np.exp(Z)
    return E / E.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------------------------- neighbours
def topk_cosine(queries: np.ndarray, bank: np.ndarray, k: int, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """The k most cosine-similar bank rows for every query: (similarities, indices), most similar first.

    ``bank`` must already be L2-normalised (heads store it so); queries are normalised here. Exact search
    by blocks of queries (a (chunk, n_bank) similarity block at a time), float32.
    """
    k = int(k)
    if not 1 <= k <= len(bank):
        raise ValueError(f"k={k} neighbours requested but the bank has {len(bank)} rows")
    import torch  # here, not at the top: the process that plans a study does not search neighbours

    B = torch.from_numpy(np.ascontiguousarray(bank, dtype=np.float32))
    Q = l2_normalize(np.asarray(queries, dtype=np.float32))
    sims = np.empty((len(Q), k), dtype=np.float32)
    idx = np.empty((len(Q), k), dtype=np.int64)
    for start in range(0, len(Q), chunk):
        block = torch.from_numpy(Q[start:start + chunk]) @ B.T
        v, i = torch.topk(block, k, dim=1, largest=True, sorted=True)
        sims[start:start + chunk], idx[start:start + chunk] = v.numpy(), i.numpy()
    return sims, idx


class NeighbourCache:
    """Remembers the top-``k`` search of the last few query arrays (keyed by their bytes).

    The k-NN heads of one path (k = 1..20) share one cache, so model selection searches each validation
    array once for all k instead of once per k. Results are identical with or without it.
    """

    def __init__(self, k: int, size: int = 4):
        self.k, self.size = int(k), size
        self._store: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def search(self, queries: np.ndarray, bank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(queries)
        key = (q.shape, q.dtype.str, id(bank), hashlib.blake2b(q.data, digest_size=16).digest())
        if key in self._store:
            self._store.move_to_end(key)
            return self._store[key]
        out = topk_cosine(q, bank, min(self.k, len(bank)))
        self._store[key] = out
        while len(self._store) > self.size:
            self._store.popitem(last=False)
        return out


# ------------------------------------------------------------------------------------- Gaussians
def class_means(X: np.ndarray, y_idx: np.ndarray, n_classes: int) -> np.ndarray:
    means = np.zeros((n_classes, X.shape[1]))
    for c in range(n_classes):
        rows = X[y_idx == c]
        if len(rows) == 0:
            raise ValueError(f"class index {c} has no training rows")
        means[c] = rows.mean(axis=0, dtype=np.float64)
    return means


def cosine_class_means(X: np.ndarray, y_idx: np.ndarray, n_classes: int) -> np.ndarray:
    """Unit-length means of each class's L2-normalised rows: the prototypes of nearest-class-mean cosine."""
    return l2_normalize(class_means(l2_normalize(np.asarray(X, dtype=np.float64)), y_idx, n_classes))


def tied_gaussian(X: np.ndarray, y_idx: np.ndarray, n_classes: int,
                  shrinkage: str | float = "auto") -> tuple[np.ndarray, np.ndarray, float, float]:
    """Class means and the shared (pooled within-class, shrunk) covariance's precision:
    (means, precision, log-determinant of the covariance, shrinkage used)."""
    X = np.asarray(X, dtype=np.float64)
    means = class_means(X, y_idx, n_classes)
    cov, used = shrunk_covariance(X - means[y_idx], shrinkage)
    precision, logdet = precision_and_logdet(cov)
    return means, precision, logdet, used


def shrunk_covariance(R: np.ndarray, shrinkage: str | float = "auto") -> tuple[np.ndarray, float]:
    """Covariance of already-centred rows ``R``, shrunk towards a scaled identity: (cov, shrinkage used).

    ``cov = (1 - a) S + a (tr S / D) I``. ``"auto"`` picks ``a`` by Ledoit & Wolf (2004), the
    closed-form choice that minimises the expected Frobenius error: it goes to 1 when there are few rows
    per dimension (few-shot studies: 5 x 1 shot in 768 dims) and towards 0 with many. With no spread at
    all (one row per class) the covariance is the identity, and Mahalanobis distance is Euclidean.
    """
    R = np.asarray(R, dtype=np.float64)
    n, D = R.shape
    S = R.T @ R / max(n, 1)
    mu = float(np.trace(S)) / D
    if mu <= 0.0:
        return np.eye(D), 1.0
    if shrinkage == "auto":
        a = float(ledoit_wolf_shrinkage(R, assume_centered=True)) if n > 1 else 1.0
    else:
        a = float(shrinkage)
        if not 0.0 <= a <= 1.0:
            raise ValueError(f"shrinkage={shrinkage!r}: use 'auto' or a number in [0, 1]")
    cov = (1.0 - a) * S
    cov[np.diag_indices(D)] += a * mu
    return cov, a


def precision_and_logdet(cov: np.ndarray) -> tuple[np.ndarray, float]:
    """Inverse and log-determinant of a covariance; for a singular one, the pseudo-inverse and the
    pseudo-determinant (product of the non-zero eigenvalues).

    A covariance is singular only with shrinkage 0 on fewer training rows than dimensions (a few shots
    in 768 dims). The pseudo-inverse is what the published Mahalanobis and RMDS code computes (scikit-learn's
    ``EmpiricalCovariance``, ``scipy.linalg.pinvh``): directions the training data never spanned add no
    distance. Eigenvalues at most ``D * eps`` times the largest count as zero, as in ``pinvh``.
    """
    w, V = np.linalg.eigh(cov)
    keep = w > max(float(w.max()), np.finfo(float).tiny) * len(w) * np.finfo(float).eps
    w, V = w[keep], V[:, keep]
    return (V / w) @ V.T, float(np.sum(np.log(w)))


def mahalanobis_sq(X: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """(n, K) squared Mahalanobis distances ``(x - mu_k)^T P (x - mu_k)``, float64."""
    centre = means.mean(axis=0)  # expand around the means: no cancellation from large offsets
    X = np.asarray(X, dtype=np.float64) - centre
    means = means - centre
    XP = X @ precision
    quad_x = np.einsum("ij,ij->i", XP, X)
    cross = XP @ means.T
    quad_m = np.einsum("kj,jl,kl->k", means, precision, means)
    return np.maximum(quad_x[:, None] - 2.0 * cross + quad_m[None, :], 0.0)
