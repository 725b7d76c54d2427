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
  close to diagonal, ``h_d + 1/(C n)`` with h_d = mean_i,k p_ik (1 - p_ik) (u_d . z_i)^2 (estimated on
  a row subsample at the warm start). L-BFGS runs in the variables ``V = (U^T W) / p`` with
  ``p = (h + 1/(C n))^-1/2``: a change of variables, not an approximation (the optimum is the same),
  that turns hundreds of iterations into tens. ``p`` is the same for every class: the data term does
  not change when one vector is added to every class's weights, so the optimum's weights sum to zero
  over the classes; a class-independent ``p`` keeps every step in that subspace, where per-class scales
  let the iterates drift along a direction only the (tiny, at large C) penalty pulls back.
- The data are rotated into the eigenbasis once, in place, chunk by chunk: no second copy (on a GPU,
  after they are copied there: the rotation is most of the preparation's arithmetic).
- Batching and warm starts: C values are solved in ascending groups of a few (5) at once; one
  (n, D) x (D, g K) product serves a whole group, several times cheaper than g products with K columns
  (the product is memory-bound for K = 5). On one thread the product is computed transposed, ``W^T Z^T``,
  which is faster than ``Z W``: 1.2x for a group's 25 columns, 1.5x for a whole single-C solve (5
  columns; the bare 5-column product alone is faster ``Z W``, but the softmax and the gradient product
  then run along contiguous rows); on several threads, rows first (BLAS
  splits ``Z W`` over threads, not ``W^T Z^T``). Every product of a group has the same
  shape, even after some of its C have converged, so each C sees one deterministic float32 objective.
  Each group starts from the previous group's two largest C extrapolated linearly in log C, which is
  how the weights grow along the path.
- Products: on the CPU in float32, the passes' two products, the rotation and the curvature estimate
  run on oneDNN where torch runs AVX-512 kernels and has the operator (:mod:`attrib.probe.onednn`;
  2-3x faster than MKL per product on the AMD EPYC measured; the paper's whole protocol there: 80-87 s
  against 114-117 s on MKL), and on torch's BLAS otherwise or with ``products="blas"``.
- What else was measured (5 classes x 4000 x 768 CLIP-like features, ``python -m attrib.bench probe``;
  products for the 45 C with groups of 5: 160-180): groups of 1 / 2 / 3 / 8 took 303 / 230 / 189 / 146
  products, within 10% of groups of 5 in time; a sliding window (the next C enters as soon as one
  converges) more, because each C is then extrapolated from solutions that converged separately, whose
  errors do not cancel in the difference; starting a C with its neighbour's L-BFGS memory (translated
  exactly for the new penalty), pooling a group's memories, quadratic extrapolation, or the per-class
  blocks of the full-data Hessian as preconditioner: within 10%; a Kronecker (K-FAC) preconditioner
  from the curvature-weighted second moment: 25% fewer products but an eigendecomposition per group,
  which costs about as much. Exact Newton converges in 2-3 steps from these warm starts, but its
  (DK)^2 Hessian costs more than the whole path. The iterations are spent at large C, where the
  classes are nearly separable and the objective is a long flat valley.
- Working sets: there, too, almost all of the gradient comes from a few rows. After each exact pass
  the rows carrying 99% of the gradient weight (``1 - p_y``) are copied out, if they are at most half
  the rows; L-BFGS then steps on them, the other rows' term frozen to first order, and re-anchors with
  an exact pass every 10 steps or when every C says it has converged on that model (only an exact pass
  can say so: :mod:`attrib.probe.lbfgs`). On the benchmark's GenImage-shaped blocks this halves the
  passes of the separable blocks (435 to 195 products on the hardest) and leaves the others alone.
- Screening (:class:`Screen`, when the caller chooses C by validation accuracy): the path to ``tol``
  1e-4 first, then to ``tol`` only the C values near the best, each from its loose solution with a
  fresh curvature estimate and L-BFGS memory. On the benchmark's blocks that is 55-96 passes instead of
  56-160 per path. The refined C end as close to the optimum as the path's own (2e-7 to 6e-7 relative,
  against 2e-7 to 1.6e-6, near the best C of two blocks), and the chosen C agreed with a float64
  reference (``tol`` 1e-10) on 12 of 12 of the protocol's lines checked, the unscreened path's on 8:
  the lines that differ are near-ties that solver precision decides (docs/benchmarks.md, "The
  paper's whole protocol").
- Stopping: relative, from the quasi-Newton model (see :func:`attrib.probe.lbfgs.batched_lbfgs`), so that
  large C, where the classes are nearly separable and the objective tends to 0, are not stopped early
  merely because the objective is small. The model's curvature is optimistic there, though: measured
  against float64 references on the benchmark's blocks, ``tol=1e-6`` ends within 1e-6 of the optimum
  (relative) for C up to 1 but up to 4e-5 short at C of 10 to 1e5 (at most 6 of 5,000 validation
  predictions moved); ``dtype="float64", tol=1e-8`` gets within about 1e-7 at 2.6x the cost.
  (docs/benchmarks.md, "How close the C path gets to the optimum".)
- float32 by default. Losses and gradients are computed without cancellation for confidently right
  samples and objective values are summed in float64; float32 still limits the relative precision of the
  objective to about 1e-7, so ``tol`` below ~1e-6 needs ``dtype="float64"``.
- Memory: one centred copy of the features (in ``dtype``), a working set of at most half of it, and per
  product logits of at most ``max_batch_elems`` numbers (more rows are processed in chunks), so a
  million-row block needs at most about 2.5 times its own size.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from attrib.probe.geometry import all_finite, column_mean_std
from attrib.probe.lbfgs import batched_lbfgs
from attrib.probe.logreg_args import check_Cs, torch_device
from attrib.probe.logreg_objective import Objective
from attrib.probe.onednn import Product, onednn_for

_SMALL_PROBLEM = 2 ** 24  # n * D * K * (C values per group) below which one thread is faster than several


@dataclass
class LogregPath:
    """Solutions along the path, in the caller's (raw) feature space: ``logits = X @ coef[j].T + intercept[j]``."""

    Cs: np.ndarray          # (m,)
    coef: np.ndarray        # (m, K, D) float64
    intercept: np.ndarray   # (m, K) float64
    n_iter: np.ndarray      # (m,) L-BFGS iterations per C
    converged: np.ndarray   # (m,) bool: stopping rule met (False: max_iter or the float precision floor)
    n_products: float = 0   # passes over the data (objective and gradient of a group of C; a pass
    #                         over a working set counts as its share of the rows)
    solved_tol: np.ndarray | None = None  # (m,) the tolerance each C was solved to (tol, or a Screen's)

    def record(self, idx: np.ndarray, W: torch.Tensor, b: torch.Tensor, n_iter: np.ndarray, converged: np.ndarray,
               tol: float) -> None:
        """Keep a group's solutions (torch, (g, D, K) and (g, K)) as the C at ``idx``: the path's own
        solve of those C and a screen's refinement of them alike (iterations add up)."""
        self.coef[idx] = W.transpose(1, 2).double().cpu().numpy()
        self.intercept[idx] = b.double().cpu().numpy()
        self.n_iter[idx] += n_iter
        self.converged[idx] = converged
        self.solved_tol[idx] = tol


@dataclass(frozen=True)
class Screen:
    """Solve the path loosely first, and to the full tolerance only the C values that can still win.

    Why: model selection compares the C values by validation accuracy, and most of a path's passes go
    to C values far from the best (the nearly separable ones, at large C). Solved to ``tol`` 1e-4 they
    cost about half; their validation accuracy then moves by a few images at most near the best, by a
    few points at the smallest C, never enough to make one of them the best when it is far from it.

    ``choose(coef, intercept)`` gets every C's solution in the caller's feature space (as
    :class:`LogregPath` holds them) and returns the indices that must be solved to the full tolerance
    (those whose validation accuracy is close to the best). It is asked again after each refinement,
    since a refined C's accuracy may fall and bring others close, until it asks for nothing new.
    """

    tol: float
    choose: Callable[[np.ndarray, np.ndarray], Sequence[int]]


def _torch_dtype(dtype: str) -> torch.dtype:
    try:
        return {"float32": torch.float32, "float64": torch.float64}[dtype]
    except KeyError:
        raise ValueError(f"dtype {dtype!r}: use 'float32' or 'float64'") from None


def _check_mass(mass: float) -> float:
    if not 0 < mass <= 1:
        raise ValueError(f"working_set_mass must be in (0, 1], got {mass}")
    return float(mass)


def fit_logreg_path(X: np.ndarray, y_idx: np.ndarray, n_classes: int, Cs: Sequence[float], *,
                    standardize: bool = False, tol: float = 1e-6, max_iter: int = 1000, memory: int = 10,
                    dtype: str = "float32", group_size: int = 5, max_batch_elems: int = 2 ** 25,
                    curvature_rows: int = 4096, max_rotation_dim: int = 4096, working_set_mass: float = 0.99,
                    seed: int = 0, device: str = "cpu", screen: Screen | None = None,
                    products: str = "auto") -> LogregPath:
    """Fit multinomial L2 logistic regression for every C in ``Cs``.

    ``y_idx`` are class indices 0..n_classes-1. A C stops when the objective decrease its quasi-Newton
    model still predicts is <= ``tol`` x the objective (a relative suboptimality of about tol / 2 where
    that model is good; at large C it is optimistic: see the module docstring).
    C values are solved ``group_size`` at a time in ascending order, each group warm-started by
    extrapolating the previous solutions. The logits of one product hold at most ``max_batch_elems``
    numbers (more rows are processed in chunks). The preconditioner's curvature is estimated on at most
    ``curvature_rows`` rows: it only shapes the conditioning, never the solution. Between exact passes
    the solver may step on the rows that carry ``working_set_mass`` of the gradient weight (1 turns
    this off); convergence is always checked on all rows. ``device`` (``"cpu"``, ``"cuda"``,
    ``"cuda:N"`` or ``"auto"``: CUDA when torch sees it) is where the rows are held and every product
    runs; they are centred on the CPU, copied there once and rotated into the eigenbasis there.
    ``screen`` (:class:`Screen`, used when its ``tol`` is looser than ``tol``): the whole path to the
    screen's tolerance, then to ``tol`` only the C values it chooses (``solved_tol`` says which).
    ``products``: "auto" runs the CPU's float32 products on oneDNN with AVX-512 (2-3x faster than
    its BLAS; :mod:`attrib.probe.onednn`), "blas" on torch's BLAS (as attrib computed before).
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
    if not all_finite(X):
        raise ValueError("features contain NaN or inf; check the feature cache (`attrib cache verify`)")
    tdt = _torch_dtype(dtype)
    tdev = torch_device(device)
    group = max(1, min(int(group_size), len(Cs)))
    with _threads(1 if n * min(D, n) * K * group < _SMALL_PROBLEM else None):
        fast = onednn_for(products, torch.empty(0, dtype=tdt, device=tdev))  # None: torch's own products
        data = _Prepared(X, standardize, tdt, curvature_rows, max_rotation_dim, seed, tdev, fast)
        labels = torch.from_numpy(y_idx.astype(np.int64)).to(tdev)
        chunk = max(1, min(n, int(max_batch_elems) // max(group * K, 1)))
        objective = Objective(data.Z, labels, K, chunk, _check_mass(working_set_mass), fast)
        curv = _Curvature(data.Zs, K, fast)
        loose = screen is not None and screen.tol > tol
        path = _solve_groups(objective, curv, Cs, group, tdt, tol=screen.tol if loose else tol,
                             max_iter=max_iter, memory=memory)
        if loose:
            _refine(path, objective, curv, data, screen.choose, group, tdt, tol=tol, max_iter=max_iter, memory=memory)
    path.coef, path.intercept = data.to_raw(path.coef, path.intercept)
    return path


def _refine(path: LogregPath, objective: Objective, curv: _Curvature, data: _Prepared,
            choose: Callable[[np.ndarray, np.ndarray], Sequence[int]], group: int, tdt: torch.dtype, *,
            tol: float, max_iter: int, memory: int) -> None:
    """Solve to ``tol`` the C values ``choose`` asks for, each from its own loose solution, in ascending
    groups, until it asks for none that is not solved to ``tol`` yet (see :class:`Screen`)."""
    dev = objective.Z.device
    while True:
        wanted = np.unique(np.asarray(choose(*data.to_raw(path.coef, path.intercept)), dtype=np.int64))
        if len(wanted) and (wanted.min() < 0 or wanted.max() >= len(path.Cs)):
            raise ValueError(f"the screen chose C indices {wanted.tolist()}; the path has {len(path.Cs)}")
        todo = wanted[path.solved_tol[wanted] > tol]
        if not len(todo):
            return
        todo = todo[np.argsort(path.Cs[todo], kind="stable")]
        for start in range(0, len(todo), group):
            idx = todo[start:start + group]
            warm = (torch.from_numpy(path.coef[idx].transpose(0, 2, 1)).to(device=dev, dtype=tdt),
                    torch.from_numpy(path.intercept[idx]).to(device=dev, dtype=tdt))
            problem = _PathProblem(objective, curv, path.Cs[idx], tdt)
            path.record(idx, *problem.solve(warm, tol=tol, max_iter=max_iter, memory=memory), tol)
        path.n_products = objective.products


class _Prepared:
    """The centred (optionally standardised) features in the preconditioner's basis, as one torch array.

    ``U`` is the covariance eigenbasis (from a row subsample); the data are rotated into it in place,
    and ``Zs`` is the subsample in that basis (for curvature estimates). With fewer rows than dimensions
    (few-shot studies) the basis is the rows' span (``span``, D x n) and the problem is solved exactly
    in n dimensions: the optimal weights lie in that span (the penalty alone acts outside it). Above
    ``max_rotation_dim`` dimensions (concatenated blocks) the D^3 eigendecomposition is not worth it
    and the preconditioner stays diagonal in the feature axes.
    """

    def __init__(self, X: np.ndarray, standardize: bool, tdt: torch.dtype, curvature_rows: int,
                 max_rotation_dim: int, seed: int, device: torch.device, onednn: Product | None = None):
        n, D = X.shape
        np_dtype = np.float32 if tdt == torch.float32 else np.float64
        mean, std = column_mean_std(X) if standardize else (X.mean(axis=0, dtype=np.float64), None)
        # the shift and scale actually applied (rounded to dtype), so that mapping the solution back to the
        # raw features is exact
        mean, scale = mean.astype(np_dtype), (std + 1e-6 if standardize else np.ones(D)).astype(np_dtype)
        self.mean, self.scale = mean.astype(np.float64), scale.astype(np.float64)
        Zn = np.subtract(X, mean, dtype=np_dtype)   # the one copy of the data
        if standardize:
            Zn /= scale
        rows = np.arange(n) if n <= curvature_rows else np.sort(
            np.random.default_rng(seed).choice(n, curvature_rows, replace=False))
        self.span = self.U = None
        rotation = None
        if n < D:
            self.span = np.ascontiguousarray(np.linalg.svd(Zn.astype(np.float64), full_matrices=False)[2].T)
            Zn = Zn @ self.span.astype(np_dtype)
        elif D <= max_rotation_dim:
            Zs = Zn[rows].astype(np.float64)
            self.U = np.linalg.eigh(Zs.T @ Zs / len(rows))[1]
            rotation = self.U.astype(np_dtype)
        on_device = _rotate_on_device(device)
        if rotation is not None and not on_device:
            if onednn is None:
                _rotate_in_place(Zn, rotation)
            else:  # the same product by oneDNN, on torch views of the same memory
                _rotate_in_place(torch.from_numpy(Zn), torch.from_numpy(rotation), product=onednn)
        self.Z = torch.from_numpy(Zn).to(device)   # on the CPU the same array, no copy
        if rotation is not None and on_device:     # most of the preparation's work: on a GPU, run it there
            _rotate_in_place(self.Z, torch.from_numpy(rotation).to(device))
        self.Zs = self.Z[torch.from_numpy(rows).to(device)]

    def to_raw(self, coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Solutions in the solver's basis, (m, K, d) and (m, K), in the raw feature axes:
        ``logits = X @ coef[j].T + intercept[j]``."""
        basis = self.span if self.span is not None else self.U
        if basis is not None:  # one BLAS product for every C and class (np.einsum's own loop: 5-10x slower)
            m, K, d = coef.shape
            coef = (coef.reshape(m * K, d) @ basis.T).reshape(m, K, basis.shape[0])
        coef = coef / self.scale
        return coef, intercept - coef @ self.mean


def _rotate_on_device(device: torch.device) -> bool:
    """Whether the rows are rotated after they reach ``device`` (a GPU) rather than by numpy before:
    on the CPU numpy's product is kept, so that the CPU path's numbers do not depend on this choice."""
    return device.type != "cpu"


def _rotate_in_place(Z: np.ndarray | torch.Tensor, U: np.ndarray | torch.Tensor, chunk: int = 8192,
                     product: Product | None = None) -> None:
    """``Z <- Z @ U`` a chunk of rows at a time, so that no second copy of the data is ever held (numpy
    arrays or torch tensors alike); ``product(a, b) = a @ b.T`` (torch tensors) in place of ``@``."""
    for a in range(0, len(Z), chunk):
        Z[a:a + chunk] = Z[a:a + chunk] @ U if product is None else product(Z[a:a + chunk], U.T)


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Temporarily limit torch's and the BLAS libraries' threads: for small problems the per-operation
    thread hand-off costs more than the arithmetic (10x slower on a busy 2-core machine)."""
    before = torch.get_num_threads()
    if n is None or n >= before:
        yield
        return
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)


class _Curvature:
    """Diagonal of the data term's Hessian in the covariance eigenbasis, from a row subsample, averaged
    over the classes (see the module docstring for why it is the same for every class).

    For eigenvector u_d it is mean_i,k p_ik (1 - p_ik) (u_d . z_i)^2; at W = 0 (p = 1/K) this is
    (1/K)(1 - 1/K) lam_d. (Re-estimating it during the solve, as the classes separate, was tried:
    L-BFGS's own scaling already absorbs the change, and restarts cost more than they saved.)
    """

    def __init__(self, Zs: torch.Tensor, K: int, onednn: Product | None = None):
        self.Zs, self.Zs2, self.K = Zs, Zs ** 2, K  # rows already in the eigenbasis
        self.onednn = onednn  # oneDNN's a @ b.T (attrib.probe.onednn), or None for torch's products

    def diag(self, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(g, D + 1, 1) at weights W (g, D, K), b (g, K): rows 0..D-1 for the weights, row D for the
        intercept."""
        g, D, K = W.shape
        ns = self.Zs.shape[0]
        Wr = W.permute(1, 0, 2).reshape(D, g * K)
        if self.onednn is None:
            L = torch.addmm(b.reshape(1, g * K), self.Zs, Wr)
        else:
            L = self.onednn(self.Zs, Wr.T).add_(b.reshape(1, g * K))
        P = torch.softmax(L.view(ns, g, K), dim=2)
        w = (P * (1 - P)).mean(dim=2)                                             # (ns, g)
        hw = (self.Zs2.T @ w).T if self.onednn is None else self.onednn(w.T.contiguous(), self.Zs2.T)
        return torch.cat([hw / ns, w.mean(dim=0)[:, None]], dim=1).unsqueeze(2)


def _solve_groups(objective: Objective, curv: _Curvature, Cs: np.ndarray, group: int, tdt: torch.dtype, *,
                  tol: float, max_iter: int, memory: int) -> LogregPath:
    """Solve C values in ascending groups (all at once when ``group >= len(Cs)``); coefficients returned
    in the coordinates of ``objective.Z``."""
    m, D, K = len(Cs), objective.D, objective.K
    order = np.argsort(Cs, kind="stable")
    path = LogregPath(Cs=Cs, coef=np.empty((m, K, D)), intercept=np.empty((m, K)), n_iter=np.zeros(m, dtype=np.int64),
                      converged=np.zeros(m, dtype=bool), solved_tol=np.full(m, np.nan))
    done: list[tuple[float, torch.Tensor, torch.Tensor]] = []  # (log C, W, b) of the last two solved
    for start in range(0, len(order), group):
        idx = order[start:start + group]
        problem = _PathProblem(objective, curv, Cs[idx], tdt)
        Wt, bt, it, conv = problem.solve(_warm_start(done, np.log(Cs[idx]), tdt), tol=tol,
                                         max_iter=max_iter, memory=memory)
        done = (done + [(float(np.log(Cs[i])), Wt[j], bt[j]) for j, i in enumerate(idx)])[-2:]
        path.record(idx, Wt, bt, it, conv, tol)
    path.n_products = objective.products
    return path


def _warm_start(done, log_cs: np.ndarray, dtype) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Starting points for the next group: the last solution, moved along the path's current slope
    (linear in log C, which is how the weights grow once the classes separate)."""
    if not done:
        return None
    lc1, W1, b1 = done[-1]
    if len(done) < 2 or done[0][0] == lc1:
        t = torch.zeros(len(log_cs), dtype=dtype, device=W1.device)
        W0, b0 = W1, b1
    else:
        lc0, W0, b0 = done[0]
        t = torch.from_numpy((log_cs - lc1) / (lc1 - lc0)).to(device=W1.device, dtype=dtype)
    return W1 + t[:, None, None] * (W1 - W0), b1 + t[:, None] * (b1 - b0)


class _PathProblem:
    """m independent problems (one per C) sharing the data; parameters stacked as (m, D + 1, K).

    The optimisation variables are ``V = (W, b) / p`` with ``p = (h + 1/(C n))^-1/2`` per coordinate
    (the same for every class), h the curvature estimate: in these variables the Hessian is close to the
    identity.
    """

    def __init__(self, objective: Objective, curv: _Curvature, Cs: np.ndarray, dtype: torch.dtype):
        self.obj, self.curv, self.dtype = objective, curv, dtype
        n, D = objective.n, objective.D
        self.D, self.K = D, objective.K
        dev = objective.Z.device
        self.pen64 = torch.from_numpy(1.0 / (Cs * n)).to(dev)  # float64
        self.pen = self.pen64.to(dtype)
        self.penV = torch.zeros(len(Cs), D + 1, 1, dtype=dtype, device=dev)  # the penalty's curvature (none on b)
        self.penV[:, :D, 0] = self.pen[:, None]
        self.p = torch.ones(len(Cs), D + 1, 1, dtype=dtype, device=dev)
        self.may_model = True

    @property
    def modelling(self) -> bool:
        return self.obj.working_set is not None

    def exact(self, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The objective on every row (see :class:`attrib.probe.lbfgs.Problem`)."""
        return self._value_and_grad(V, self.obj.exact if self.may_model else self.obj)

    def model(self, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._value_and_grad(V, self.obj)

    def stop_modelling(self) -> None:
        self.may_model, self.obj.working_set = False, None

    def _value_and_grad(self, V: torch.Tensor, data_term) -> tuple[torch.Tensor, torch.Tensor]:
        """Objective (m,) float64 and gradient in V for every problem (always all m: see the module
        docstring on fixed shapes)."""
        D = self.D
        Wb = V * self.p
        W, b = Wb[:, :D, :], Wb[:, D, :]
        f, gW, gb = data_term(W, b)
        f = f + 0.5 * self.pen64 * (W.double() ** 2).sum(dim=(1, 2))
        gW = gW + self.pen[:, None, None] * W
        return f, torch.cat([gW, gb[:, None, :]], dim=1) * self.p

    def solve(self, warm: tuple[torch.Tensor, torch.Tensor] | None, tol: float, max_iter: int,
              memory: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
        """``warm``: per-C starting weights (m, D, K) and intercepts (m, K), or None for zeros."""
        m = self.p.shape[0]
        if warm is None:
            dev = self.p.device
            W0 = torch.zeros(m, self.D, self.K, dtype=self.dtype, device=dev)
            b0 = torch.zeros(m, self.K, dtype=self.dtype, device=dev)
        else:
            W0, b0 = warm
        h = self.curv.diag(W0, b0)
        self.p = (h + self.penV).clamp_min(torch.finfo(self.dtype).tiny).rsqrt()
        V = torch.cat([W0, b0[:, None, :]], dim=1) / self.p
        V, n_iter, conv = batched_lbfgs(self, V, tol, max_iter, memory)
        self.stop_modelling()   # frees the working set's copy of the rows
        Wb = V * self.p
        return Wb[:, :self.D, :], Wb[:, self.D, :], n_iter, conv
