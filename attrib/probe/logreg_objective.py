"""The data term of the logistic-regression path: the mean loss and its gradient for a group of C values
in one pass over the rows, exactly or on a working set.

Why apart from :mod:`attrib.probe.logreg_path`: this is where the time goes (two products per pass,
about 60 % of a path on one CPU core with MKL, about 40 % with oneDNN), so its layout choices (the
transposed product, the library, chunks of rows, a loss without cancellation, the working set) are
measured and kept here, while the path module decides the variables, the groups of C and the warm
starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from attrib.probe.lbfgs import batch_dot
from attrib.probe.onednn import Product

_WORKING_SET_MAX_SHARE = 0.5  # a larger working set does not pay for its copy and its extra exact passes


class Objective:
    """The data term of g problems at once: one pass over the rows (in chunks of ``chunk`` rows) gives
    all g mean losses and their gradients. ``products`` counts the passes (a pass over a working set
    counts as its share of the rows).

    The logits are computed transposed, ``W^T Z^T`` as a (g K, rows) array: one thread solves 1.2x
    (25 columns) to 1.5x (5 columns) faster that way round than with ``Z W`` (measured with MKL, the
    library torch ships, on an AMD EPYC), the softmax then running along contiguous rows. On the CPU
    in float32 both products run on oneDNN where it checks out (:mod:`attrib.probe.onednn`: 2-3x
    faster than MKL there), still transposed, on any number of threads; ``products="blas"`` keeps MKL.

    Working set (see :mod:`attrib.probe.lbfgs` for the protocol): after an exact pass, the rows that
    carry ``working_set_mass`` of the total gradient weight ``1 - p_y`` (the largest over the g
    problems) are copied out; until the next exact pass, the data term is evaluated exactly on them and
    to first order (value and gradient frozen at the anchor) on the others. Only worth it when they are
    few (at most ``_WORKING_SET_MAX_SHARE`` of the rows), and never fewer than twice the dimensions, so
    that the working set still has curvature in every direction.
    """

    def __init__(self, Z: torch.Tensor, labels: torch.Tensor, K: int, chunk: int, working_set_mass: float,
                 onednn: Product | None = None):
        self.Z, self.labels, self.K, self.chunk = Z, labels, K, chunk
        self.n, self.D = Z.shape
        self.products = 0.0
        # With several threads the logits are computed rows first, ``Z W`` (then transposed): BLAS splits
        # that product over the threads by rows, and barely parallelises ``W^T Z^T`` (measured in the
        # solver, 100k x 768 rows, 25 columns, 2 threads: 69 ms against 92 ms per product; alone, 97 ms
        # against 125 ms, which is what ``W^T Z^T`` takes on one thread).
        self.rows_first = Z.device.type == "cpu" and torch.get_num_threads() > 1
        # oneDNN's a @ b.T (attrib.probe.onednn: 2-3x faster than MKL with AVX-512) for both products, the
        # logits transposed on any number of threads; None: torch's own products, as above
        self.onednn = onednn
        self.working_set_mass = working_set_mass
        self.working_set: WorkingSet | None = None

    def exact(self, W: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The data term on every row; picks the working set for the evaluations that follow."""
        self.working_set = None
        f, gW, gb, weight = self._pass(self.Z, self.labels, W, b, row_weight=True)
        rows = self._working_rows(weight)
        if rows is not None:
            Za, ya = self.Z[rows], self.labels[rows]
            fa, gWa, gba, _ = self._pass(Za, ya, W, b)
            self.working_set = WorkingSet(Za, ya, W.clone(), b.clone(), f - fa, gW - gWa, gb - gba)
        return f, gW, gb

    def _working_rows(self, weight: torch.Tensor) -> torch.Tensor | None:
        if self.working_set_mass >= 1:
            return None
        order = torch.argsort(weight, descending=True, stable=True)
        mass = torch.cumsum(weight[order].double(), dim=0)
        size = int(torch.searchsorted(mass, self.working_set_mass * mass[-1])) + 1
        size = max(size, 2 * self.D)
        if self.onednn is not None:  # oneDNN compiles and keeps a kernel per shape: let the sizes repeat
            size = min(_repeating(size), self.n)
        if size > _WORKING_SET_MAX_SHARE * self.n:
            return None
        return torch.sort(order[:size]).values

    def __call__(self, W: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """W (g, D, K), b (g, K) -> mean loss (g,) float64 and its gradients (g, D, K), (g, K): exact,
        or the working-set model while there is one."""
        ws = self.working_set
        if ws is None:
            return self._pass(self.Z, self.labels, W, b)[:3]
        f, gW, gb, _ = self._pass(ws.Z, ws.labels, W, b)
        f = f + ws.f_rest + batch_dot(ws.gW_rest, W - ws.W).double() + batch_dot(ws.gb_rest, b - ws.b).double()
        return f, gW + ws.gW_rest, gb + ws.gb_rest

    def _pass(self, Z: torch.Tensor, labels: torch.Tensor, W: torch.Tensor, b: torch.Tensor,
              row_weight: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Sums over the rows of ``Z``, divided by all n; with ``row_weight``, each row's largest
        ``1 - p_y`` over the g problems."""
        K, D, rows = self.K, self.D, len(Z)
        g = W.shape[0]
        Wt = W.transpose(1, 2).reshape(g * K, D)
        bt = b.reshape(g * K, 1)
        dev = W.device
        f = torch.zeros(g, dtype=torch.float64, device=dev)
        gWt = torch.zeros(g * K, D, dtype=W.dtype, device=dev)
        gb = torch.zeros(g * K, dtype=W.dtype, device=dev)
        weight = torch.empty(rows, dtype=W.dtype, device=dev) if row_weight else None
        for a in range(0, rows, self.chunk):
            Zc, yc = Z[a:a + self.chunk], labels[a:a + self.chunk]
            if self.onednn is not None:
                L = self.onednn(Wt, Zc).add_(bt).view(g, K, len(Zc))
            elif self.rows_first:
                L = torch.addmm(bt.T, Zc, Wt.T).T.contiguous().view(g, K, len(Zc))
            else:
                L = torch.addmm(bt, Wt, Zc.T).view(g, K, len(Zc))
            G, loss = softmax_minus_onehot(L, yc)
            if weight is not None:   # G at the label is p_y - 1
                weight[a:a + len(Zc)] = -G.gather(1, yc.view(1, 1, -1).expand(g, 1, -1)).squeeze(1).amin(dim=0)
            f += loss.sum(dim=1, dtype=torch.float64)
            G = G.view(g * K, len(Zc))
            if self.onednn is not None:
                gWt += self.onednn(G, Zc.T)
            else:
                gWt.addmm_(G, Zc)
            gb += G.sum(dim=1)
        self.products += rows / self.n
        n = self.n
        return f / n, gWt.view(g, K, D).transpose(1, 2) / n, gb.view(g, K) / n, weight


def _repeating(size: int) -> int:
    """``size`` rounded up to five significant bits (16 values per doubling, at most 6 % more rows).

    Why: oneDNN (through torch) compiles a kernel for each product shape it meets and keeps the last
    1,024 (measured: a process grew by 0.5-0.8 GB over the first thousand or so, then stayed there);
    on this coarse scale the sizes of one path and the next repeat, so few are compiled or kept.
    """
    step = 1 << max(0, size.bit_length() - 5)
    return -(-size // step) * step


@dataclass
class WorkingSet:
    """The working set's rows, and the other rows' data term and gradient frozen at the anchor (W, b)."""

    Z: torch.Tensor
    labels: torch.Tensor
    W: torch.Tensor
    b: torch.Tensor
    f_rest: torch.Tensor
    gW_rest: torch.Tensor
    gb_rest: torch.Tensor


def softmax_minus_onehot(L: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits L (g, K, r) and labels y (r,) -> softmax - onehot (g, K, r) (computed in L's storage) and
    the per-row losses (g, r), without cancellation for confidently right samples (the whole gradient
    in the nearly separable regime): loss = log1p(rest) when y is the argmax, p_y - 1 = -rest / s,
    with rest the sum of exp(L_k - max) over k != y."""
    yi = y.view(1, 1, -1).expand(L.shape[0], 1, -1)
    mx = L.amax(dim=1, keepdim=True)
    Ly = L.gather(1, yi).squeeze(1)
    E = L.sub_(mx).exp_()
    Ey = E.gather(1, yi).squeeze(1)                        # exp(L_y - max)
    rest = E.scatter_(1, yi, 0.0).sum(dim=1)
    s = rest + Ey
    loss = torch.where(Ey == 1, torch.log1p(rest), s.log() + mx.squeeze(1) - Ly)
    G = E.div_(s.unsqueeze(1)).scatter_(1, yi, (-rest / s).unsqueeze(1))
    return G, loss
