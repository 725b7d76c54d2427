"""The whole L2 logistic-regression path (many C at once) with a batched, preconditioned L-BFGS in torch.

Why not scikit-learn once per C: the paper's code fits ``LogisticRegression(C, tol=1e-12,
max_iter=1000)`` for each of 45 values of C. Raw CLIP features of intermediate blocks have a few
dimensions with huge activations and a steep covariance spectrum, so plain L-BFGS needs hundreds of
iterations per C, and every iteration streams the whole (n, D) matrix for only K output columns.

What this does instead, solving exactly the same objective as scikit-learn's lbfgs solver::

    minimise over W (K, D), b (K):  (1/n) sum_i [logsumexp(W z_i + b) - (W z_i + b)_{y_i}] + ||W||^2 / (2 C n)

(``z_i`` are the features, centred — an exact reparametrisation, since the intercept is not penalised —
and optionally standardised, which changes the penalty and is the caller's choice.)

- Preconditioning: in the eigenbasis U of the feature covariance, the Hessian of the objective is
  close to diagonal, ``h_dk + 1/(C n)`` with h_dk = mean_i p_ik (1 - p_ik) (u_d . z_i)^2 (estimated on a
  row subsample, at W = 0 or at the warm start). L-BFGS runs in the variables
  ``V = (U^T W) / p`` with ``p = (h + 1/(C n))^-1/2``: a change of variables, not an approximation (the
  optimum is the same), that turns hundreds of iterations into tens.
- Batching and warm starts: C values are solved in ascending groups of a few (5) at once; one
  (n, D) x (D, g K) product serves a whole group, several times cheaper than g products with K columns
  (the product is memory-bound for K = 5), and a converged C leaves its batch. Each group starts from the
  previous solutions extrapolated linearly in log C, which is how the weights grow along the path. On
  5 x 4000 x 768 features, groups of 5 took 490 L-BFGS iterations in all (45 C), all C at once from
  zero 1,500, one C at a time 230 but with 5x less efficient products.
- Stopping: relative, from the quasi-Newton model (see ``_batched_lbfgs``), so that large C, where the
  classes are nearly separable and the objective tends to 0, are solved as precisely as small C.
- float32 by default. Losses and gradients are computed without cancellation for confidently right
  samples and objective values are summed in float64; float32 still limits the relative precision of the
  objective to about 1e-7, so ``tol`` below ~1e-6 needs ``dtype="float64"``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

_ARMIJO = 1e-4
_MAX_HALVINGS = 10
_SMALL_PROBLEM = 2 ** 24  # n * D * K * (number of C) below which one thread is faster than several


@dataclass
class LogregPath:
    """Solutions along the path, in the caller's (raw) feature space: ``logits = X @ coef[j].T + intercept[j]``."""

    Cs: np.ndarray          # (m,)
    coef: np.ndarray        # (m, K, D) float64
    intercept: np.ndarray   # (m, K) float64
    n_iter: np.ndarray      # (m,) L-BFGS iterations per C
    converged: np.ndarray   # (m,) bool: stopping rule met (False: max_iter or the float precision floor)


def _torch_dtype(dtype: str) -> torch.dtype:
    try:
        return {"float32": torch.float32, "float64": torch.float64}[dtype]
    except KeyError:
        raise ValueError(f"dtype {dtype!r}: use 'float32' or 'float64'") from None


def check_Cs(Cs: Sequence[float]) -> None:
    """Refuse C values that are not finite and > 0, naming them as the caller gave them.

    Public so that callers that transform C before solving (the binary logistic probe halves it) and
    option parsers check the user's own values, and an error never shows a value the user did not type.
    """
    values = np.asarray(Cs, dtype=object).ravel().tolist()
    bad = [v for v in values if not _positive_finite(v)]
    if bad or not values:
        raise ValueError(f"C values must be finite numbers > 0, got {', '.join(map(str, bad)) or 'none'}")


def _positive_finite(v: object) -> bool:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return bool(np.isfinite(f) and f > 0)


def fit_logreg_path(X: np.ndarray, y_idx: np.ndarray, n_classes: int, Cs: Sequence[float], *,
                    standardize: bool = False, tol: float = 1e-6, max_iter: int = 1000, memory: int = 10,
                    dtype: str = "float32", group_size: int = 5, max_batch_elems: int = 2 ** 25,
                    curvature_rows: int = 4096, max_rotation_dim: int = 4096, seed: int = 0) -> LogregPath:
    """Fit multinomial L2 logistic regression for every C in ``Cs``.

    ``y_idx`` are class indices 0..n_classes-1. A C stops when the objective decrease its quasi-Newton
    model still predicts is <= ``tol`` x the objective (a relative suboptimality of about tol / 2).
    C values are solved ``group_size`` at a time in ascending order (fewer if a group's logits would
    exceed ``max_batch_elems`` floats), each group warm-started by extrapolating the previous solutions.
    The preconditioner's curvature is estimated on at most ``curvature_rows`` rows: it only shapes the
    conditioning, never the solution.
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"features must be a 2-D array (n, D), got shape {X.shape}")
    check_Cs(Cs)
    Cs = np.asarray(Cs, dtype=np.float64).ravel()
    y_idx = np.asarray(y_idx)
    n, D = X.shape
    K = int(n_classes)
    if y_idx.shape != (n,) or n == 0:
        raise ValueError(f"need one label per row: {n} rows, labels of shape {y_idx.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError("features contain NaN or inf; check the feature cache (`attrib cache verify`)")
    tdt = _torch_dtype(dtype)

    np_dtype = np.float32 if tdt == torch.float32 else np.float64
    mean = X.mean(axis=0, dtype=np.float64)
    scale = X.std(axis=0, dtype=np.float64) + 1e-6 if standardize else np.ones(D)
    Zn = np.asarray(X, dtype=np_dtype) - mean.astype(np_dtype)
    if standardize:
        Zn /= scale.astype(np_dtype)
    onehot = torch.nn.functional.one_hot(torch.from_numpy(y_idx.astype(np.int64)), K).to(tdt)

    # The covariance eigenbasis U, from a row subsample; the data are rotated into it once (n D^2, about
    # two iterations' worth of work), so the iterations never touch U. With fewer rows than dimensions
    # (few-shot studies) the basis is the rows' span, U is D x n, and the problem is solved exactly in n
    # dimensions: the optimal weights lie in that span (the penalty alone acts outside it). Above
    # ``max_rotation_dim`` dimensions (concatenated blocks) the D^3 eigendecomposition is not worth it
    # and the preconditioner stays diagonal in the feature axes.
    rows = np.arange(n) if n <= curvature_rows else np.sort(
        np.random.default_rng(seed).choice(n, curvature_rows, replace=False))
    if n < D:
        U = np.ascontiguousarray(np.linalg.svd(Zn.astype(np.float64), full_matrices=False)[2].T)
    elif D <= max_rotation_dim:
        Zs = Zn[rows].astype(np.float64)
        U = np.linalg.eigh(Zs.T @ Zs / len(rows))[1]
    else:
        U = None
    width = D if U is None else U.shape[1]
    order = np.argsort(Cs, kind="stable")
    group = max(1, min(int(group_size), int(max_batch_elems // max(n * K, 1))))
    with _threads(1 if n * width * K * min(group, len(Cs)) < _SMALL_PROBLEM else None):
        Z = torch.from_numpy(Zn)
        del Zn
        if U is not None:
            Z = Z @ torch.from_numpy(U.astype(np_dtype))
        path = _solve_groups(Z, onehot, _Curvature(Z[torch.from_numpy(rows)], K), Cs, order, group, tdt,
                             tol=tol, max_iter=max_iter, memory=memory)
    coef = path.coef if U is None else np.einsum("de,mke->mkd", U, path.coef)
    coef = coef / scale                                      # back to the raw feature axes (m, K, D)
    path.coef, path.intercept = coef, path.intercept - coef @ mean
    return path


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Temporarily limit torch's intra-op threads: for small problems the per-operation thread
    hand-off costs more than the arithmetic (10x slower on a busy 2-core machine)."""
    before = torch.get_num_threads()
    if n is not None and n < before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _solve_groups(Z, onehot, curv, Cs, order, group, tdt, *, tol, max_iter, memory) -> LogregPath:
    """Solve C values in ascending groups (all at once when ``group >= len(Cs)``); coefficients returned
    in the rotated, centred coordinates of ``Z``."""
    n, D = Z.shape
    K = onehot.shape[1]
    coef = np.empty((len(Cs), K, D))
    intercept = np.empty((len(Cs), K))
    n_iter = np.zeros(len(Cs), dtype=np.int64)
    converged = np.zeros(len(Cs), dtype=bool)
    done: list[tuple[float, torch.Tensor, torch.Tensor]] = []  # (log C, W, b) of the last two solved
    for start in range(0, len(order), group):
        idx = order[start:start + group]
        problem = _PathProblem(Z, onehot, curv, Cs[idx], tdt)
        Wt, bt, it, conv = problem.solve(_warm_start(done, np.log(Cs[idx]), tdt), tol=tol,
                                         max_iter=max_iter, memory=memory)
        done = (done + [(float(np.log(Cs[i])), Wt[j], bt[j]) for j, i in enumerate(idx)])[-2:]
        coef[idx] = Wt.transpose(1, 2).double().numpy()
        intercept[idx] = bt.double().numpy()
        n_iter[idx], converged[idx] = it, conv
    return LogregPath(Cs=Cs, coef=coef, intercept=intercept, n_iter=n_iter, converged=converged)


def _warm_start(done, log_cs: np.ndarray, dtype) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Starting points for the next group: the last solution, moved along the path's current slope
    (linear in log C, which is how the weights grow once the classes separate)."""
    if not done:
        return None
    lc1, W1, b1 = done[-1]
    if len(done) < 2 or done[0][0] == lc1:
        t = torch.zeros(len(log_cs), dtype=dtype)
        W0, b0 = W1, b1
    else:
        lc0, W0, b0 = done[0]
        t = torch.from_numpy((log_cs - lc1) / (lc1 - lc0)).to(dtype)
    return W1 + t[:, None, None] * (W1 - W0), b1 + t[:, None] * (b1 - b0)


class _Curvature:
    """Diagonal of the data term's Hessian in the covariance eigenbasis, from a row subsample.

    For class k and eigenvector u_d it is mean_i p_ik (1 - p_ik) (u_d . z_i)^2; at W = 0 (p = 1/K) this
    is (1/K)(1 - 1/K) lam_d. (Re-estimating it during the solve, as the classes separate, was tried:
    L-BFGS's own scaling already absorbs the change, and restarts cost more than they saved.)
    """

    def __init__(self, Zs: torch.Tensor, K: int):
        self.Zs, self.Zs2, self.K = Zs, Zs ** 2, K  # rows already in the eigenbasis

    def diag(self, W: torch.Tensor | None, b: torch.Tensor | None, m: int) -> torch.Tensor:
        """(m, D + 1, K): rows 0..D-1 for the weights, row D for the intercept."""
        ns = self.Zs.shape[0]
        if W is None:
            P = torch.full((1, ns, self.K), 1.0 / self.K, dtype=self.Zs.dtype).expand(m, -1, -1)
        else:
            P = torch.softmax(torch.matmul(self.Zs, W) + b[:, None, :], dim=2)   # (m, ns, K)
        w = P * (1 - P)
        hW = torch.matmul(self.Zs2.T, w) / ns                                    # (m, D, K)
        return torch.cat([hW, w.mean(dim=1, keepdim=True)], dim=1)


class _PathProblem:
    """m independent problems (one per C) sharing the data; parameters stacked as (m, D + 1, K).

    ``Z`` is in the covariance eigenbasis. The optimisation variables are ``V = (W, b) / p`` with
    ``p = (h + 1/(C n))^-1/2`` per coordinate, h the curvature estimate: in these variables the Hessian
    is close to the identity.
    """

    def __init__(self, Z: torch.Tensor, onehot: torch.Tensor, curv: _Curvature, Cs: np.ndarray,
                 dtype: torch.dtype):
        self.Z, self.onehot, self.curv, self.dtype = Z, onehot, curv, dtype
        self.notonehot = 1 - onehot
        n, D = Z.shape
        self.n, self.D, self.K = n, D, onehot.shape[1]
        pen = torch.from_numpy(1.0 / (Cs * n))  # float64
        self.pen, self.pen64 = pen.to(dtype), pen
        self.penV = torch.zeros(len(Cs), D + 1, 1, dtype=dtype)  # the penalty's curvature (none on b)
        self.penV[:, :D, 0] = self.pen[:, None]
        self.h = torch.zeros(len(Cs), D + 1, self.K, dtype=dtype)
        self.p = torch.ones(len(Cs), D + 1, self.K, dtype=dtype)

    def set_curvature(self, h: torch.Tensor, idx: torch.Tensor) -> None:
        self.h[idx] = h
        self.p[idx] = (h + self.penV[idx]).clamp_min(torch.finfo(self.dtype).tiny).rsqrt()

    def to_weights(self, V: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """V (g, D+1, K) -> W (g, D, K) acting on the rotated features, b (g, K)."""
        Vp = V * self.p[idx]
        return Vp[:, :self.D, :], Vp[:, self.D, :]

    def from_weights(self, W: torch.Tensor, b: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return torch.cat([W, b[:, None, :]], dim=1) / self.p[idx]

    def value_and_grad(self, V: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, D, K = self.n, self.D, self.K
        g = len(idx)
        W, b = self.to_weights(V, idx)
        L = (self.Z @ W.permute(1, 0, 2).reshape(D, g * K) + b.reshape(1, g * K)).view(n, g, K)
        oh = self.onehot[:, None, :]
        mx = L.amax(dim=2, keepdim=True)
        E = (L - mx).exp_()
        Ly = (L * oh).sum(dim=2)                              # (n, g)
        Ey = (E * oh).sum(dim=2)                              # exp(L_y - max)
        rest = E.mul_(self.notonehot[:, None, :]).sum(dim=2)  # sum over k != y of exp(L_k - max)
        s = rest + Ey
        # Loss and gradient without cancellation for confidently right samples (the whole gradient in
        # the nearly separable regime): loss = log1p(rest) when y is the argmax, p_y - 1 = -rest / s.
        loss = torch.where(Ey == 1, torch.log1p(rest), s.log() + mx.squeeze(2) - Ly)
        f = loss.double().sum(dim=0) / n + 0.5 * self.pen64[idx] * (W.double() ** 2).sum(dim=(1, 2))
        G = E.div_(s[..., None]).sub_(oh * (rest / s)[..., None]).div_(n).view(n, g * K)  # softmax - onehot
        gW = (G.T @ self.Z).view(g, K, D).transpose(1, 2) + self.pen[idx, None, None] * W
        gV = torch.cat([gW, G.sum(dim=0).view(g, 1, K)], dim=1) * self.p[idx]
        return f, gV

    def solve(self, warm: tuple[torch.Tensor, torch.Tensor] | None, tol: float, max_iter: int,
              memory: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
        """``warm``: per-C starting weights (m, D, K) and intercepts (m, K), or None for zeros."""
        m = self.p.shape[0]
        everyone = torch.arange(m)
        if warm is None:
            self.set_curvature(self.curv.diag(None, None, m), everyone)
            V = torch.zeros(m, self.D + 1, self.K, dtype=self.dtype)
        else:
            W0, b0 = warm
            self.set_curvature(self.curv.diag(W0, b0, m), everyone)
            V = self.from_weights(W0, b0, everyone)
        V, n_iter, conv = _batched_lbfgs(self.value_and_grad, V, tol, max_iter, memory)
        W, b = self.to_weights(V, everyone)
        return W, b, n_iter, conv


def _bdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).flatten(1).sum(dim=1)


def _col(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *[1] * (like.dim() - 1))


def _batched_lbfgs(fg, V: torch.Tensor, tol: float, max_iter: int, memory: int
                   ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Independent L-BFGS runs, one per leading index of ``V``, stepping in lockstep.

    ``fg(V_subset, idx)`` returns (f (g,) float64, grad (g, ...)). Each run has its own memory and its
    own Armijo backtracking line search (step 1 first, then halved).

    Stopping: a run stops when the decrease its quasi-Newton model predicts, ``-g.d = g^T H^-1 g``
    (about twice the distance to the optimum in objective value), is <= tol x f, relative to the
    current objective value f. Unlike a bound on the gradient alone this stays honest when the
    curvature collapses (nearly separable classes at large C, where the gradient is tiny far from the
    optimum). The model needs at least one curvature pair, so every run takes at least one step. A run
    also stops, marked not converged, when no step decreases f any more (the precision floor) or after
    ``max_iter`` iterations.
    """
    m = V.shape[0]
    dt = V.dtype
    S = torch.zeros((m, memory) + V.shape[1:], dtype=dt)
    Y = torch.zeros_like(S)
    rho = torch.zeros(m, memory, dtype=dt)
    count = torch.zeros(m, dtype=torch.long)  # curvature pairs stored so far (ring buffer)
    n_iter = np.zeros(m, dtype=np.int64)
    converged = np.zeros(m, dtype=bool)

    active = torch.arange(m)
    f, g = fg(V, active)
    for _ in range(max_iter + 1):
        d, gd = _lbfgs_direction(g, S, Y, rho, count, active, memory)
        done = ((count[active] > 0) & (-gd <= tol * f)) | (g.flatten(1).abs().amax(dim=1) == 0)
        converged[active[done].numpy()] = True
        keep = ~done
        if not bool(keep.any()):
            break
        active, f, g, d, gd = active[keep], f[keep], g[keep], d[keep], gd[keep]
        if int(n_iter[active.numpy()].max()) >= max_iter:
            break
        n_iter[active.numpy()] += 1

        V_old = V[active]
        t = torch.ones(len(active), dtype=dt)
        f_new, g_new = f.clone(), g.clone()
        moved = torch.zeros(len(active), dtype=torch.bool)
        pending = torch.arange(len(active))
        for _ in range(_MAX_HALVINGS):
            Vt = V_old[pending] + _col(t[pending], d) * d[pending]
            ft, gt = fg(Vt, active[pending])
            ok = ft <= f[pending] + _ARMIJO * t[pending].double() * gd[pending].double()
            acc = pending[ok]
            f_new[acc], g_new[acc], moved[acc] = ft[ok], gt[ok], True
            V[active[acc]] = Vt[ok]
            pending = pending[~ok]
            if len(pending) == 0:
                break
            t[pending] *= 0.5

        s = V[active] - V_old
        yv = g_new - g
        sy = _bdot(s, yv)
        good = moved & (sy > 1e-10 * s.flatten(1).norm(dim=1) * yv.flatten(1).norm(dim=1))
        gi = good.nonzero().squeeze(1)
        if len(gi):
            ai = active[gi]
            slot = count[ai] % memory
            S[ai, slot], Y[ai, slot], rho[ai, slot] = s[gi], yv[gi], 1.0 / sy[gi]
            count[ai] += 1
        f, g = f_new, g_new
        stuck = ~moved  # no decrease representable in this precision: as close as it gets
        if bool(stuck.any()):
            keep = ~stuck
            active, f, g = active[keep], f[keep], g[keep]
            if len(active) == 0:
                break
    return V, n_iter, converged


def _lbfgs_direction(g, S, Y, rho, count, active, memory) -> tuple[torch.Tensor, torch.Tensor]:
    """The two-loop recursion for every active run (newest pair first); returns (d, g.d)."""
    dt = g.dtype
    cnt = count[active]
    q = -g
    alphas = []
    for j in range(memory):
        slot = (cnt - 1 - j) % memory
        r = rho[active, slot] * (j < cnt).to(dt)
        al = r * _bdot(S[active, slot], q)
        alphas.append(al)
        q = q - _col(al, q) * Y[active, slot]
    newest = (cnt - 1) % memory
    sy = _bdot(S[active, newest], Y[active, newest])
    yy = _bdot(Y[active, newest], Y[active, newest])
    gnorm = g.flatten(1).norm(dim=1)
    gamma = torch.where(cnt > 0, sy / yy.clamp_min(torch.finfo(dt).tiny), 1.0 / gnorm.clamp_min(1.0))
    q = q * _col(gamma, q)
    for j in reversed(range(memory)):
        slot = (cnt - 1 - j) % memory
        r = rho[active, slot] * (j < cnt).to(dt)
        be = r * _bdot(Y[active, slot], q)
        q = q + _col(alphas[j] - be, q) * S[active, slot]
    gd = _bdot(g, q)
    uphill = gd >= 0
    if bool(uphill.any()):  # a broken curvature model: restart from steepest descent
        q[uphill] = -g[uphill]
        gd[uphill] = -(g[uphill] ** 2).flatten(1).sum(dim=1)
        count[active[uphill]] = 0
    return q, gd
