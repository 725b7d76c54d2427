"""Independent L-BFGS runs stepping in lockstep, on a model of the objective that may be cheaper than it.

Why a module of its own, and why a "model": the C path (:mod:`attrib.probe.logreg_path`) solves a few
problems at once that share every pass over the data, so the runs must step together. At large C the
classes are nearly separable, and almost all of the gradient comes from a few rows: the rest are
classified so confidently that their loss barely moves. The problem can then offer a *working-set
model* — exact on those rows, the remaining rows' contribution frozen to first order at an anchor point
— that costs a fraction of a pass. The model equals the objective in value and gradient at the anchor,
so L-BFGS can take its steps on it; but only the exact objective may say a run has converged. Hence the
protocol here: a run that meets the stopping rule on the model waits; when every run waits (or after
``max_model_steps`` steps), one exact pass re-anchors them all, and the stopping rule is checked again
on exact values. A run whose exact objective got worse than at the last anchor (the frozen rows
mattered after all) goes back to that anchor, and the problem is told to stop modelling.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

_ARMIJO = 1e-4
_MAX_HALVINGS = 10


class Problem(Protocol):
    """What :func:`batched_lbfgs` needs: ``exact(V)`` (a full pass; the problem may pick a new working
    set there), ``model(V)`` (the objective or, while ``modelling``, the working-set model), both
    returning (f (m,) float64, grad like V) for all m runs, and ``stop_modelling()``."""

    modelling: bool

    def exact(self, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def model(self, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def stop_modelling(self) -> None: ...


def batch_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products of two (m, ...) stacks: one number per run."""
    return (a * b).flatten(1).sum(dim=1)


def _host(index: torch.Tensor) -> np.ndarray:
    """Run indices as a numpy index for the per-run counters, which live on the host."""
    return index.cpu().numpy()


def _col(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *[1] * (like.dim() - 1))


class _Memory:
    """Each run's ring buffer of curvature pairs (s, y)."""

    def __init__(self, V: torch.Tensor, memory: int):
        m, dt = V.shape[0], V.dtype
        self.size = memory
        self.S = torch.zeros((m, memory) + V.shape[1:], dtype=dt, device=V.device)
        self.Y = torch.zeros_like(self.S)
        self.rho = torch.zeros(m, memory, dtype=dt, device=V.device)
        self.count = torch.zeros(m, dtype=torch.long, device=V.device)  # pairs stored so far

    def add(self, runs: torch.Tensor, s: torch.Tensor, y: torch.Tensor, sy: torch.Tensor) -> None:
        slot = self.count[runs] % self.size
        self.S[runs, slot], self.Y[runs, slot], self.rho[runs, slot] = s, y, 1.0 / sy
        self.count[runs] += 1

    def direction(self, g: torch.Tensor, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two-loop recursion for every active run (newest pair first); returns (d, g.d).

        The pairs are gathered once, newest first, for both loops: at a few thousand numbers per run
        the recursion is dominated by the number of torch operations, not by arithmetic."""
        memory, dt = self.size, g.dtype
        cnt = self.count[active]
        used = [j for j in range(memory) if bool((j < cnt).any())]  # slots no run has yet: no-ops
        slots = [(cnt - 1 - j) % memory for j in used]
        pairs = [(self.S[active, slot], self.Y[active, slot], self.rho[active, slot] * (j < cnt).to(dt))
                 for j, slot in zip(used, slots)]
        q = -g
        alphas = []
        for S_j, Y_j, r in pairs:
            al = r * batch_dot(S_j, q)
            alphas.append(al)
            q = q - _col(al, q) * Y_j
        if pairs:
            S_new, Y_new = pairs[0][0], pairs[0][1]
        else:
            newest = (cnt - 1) % memory
            S_new, Y_new = self.S[active, newest], self.Y[active, newest]
        sy = batch_dot(S_new, Y_new)
        yy = batch_dot(Y_new, Y_new)
        gnorm = g.flatten(1).norm(dim=1)
        gamma = torch.where(cnt > 0, sy / yy.clamp_min(torch.finfo(dt).tiny), 1.0 / gnorm.clamp_min(1.0))
        q = q * _col(gamma, q)
        for (S_j, Y_j, r), al in zip(reversed(pairs), reversed(alphas)):
            be = r * batch_dot(Y_j, q)
            q = q + _col(al - be, q) * S_j
        gd = batch_dot(g, q)
        uphill = gd >= 0
        if bool(uphill.any()):  # a broken curvature model: restart from steepest descent
            q[uphill] = -g[uphill]
            gd[uphill] = -(g[uphill] ** 2).flatten(1).sum(dim=1)
            self.count[active[uphill]] = 0
        return q, gd


def batched_lbfgs(problem: Problem, V: torch.Tensor, tol: float, max_iter: int, memory: int,
                  max_model_steps: int = 10) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Independent L-BFGS runs, one per leading index of ``V``; returns (V, iterations, converged).

    Every evaluation covers all runs; runs that are not stepping are evaluated at their current point.
    Each run has its own memory and its own Armijo backtracking line search (step 1 first, then halved).

    Stopping: a run stops when the decrease its quasi-Newton model predicts, ``-g.d = g^T H^-1 g``
    (about twice the distance to the optimum in objective value, as far as the memory's curvature is
    right; along directions much flatter than any it has seen, it underestimates), is <= tol x f,
    relative to the current objective value f, with f and g exact (see the module docstring). Unlike a
    bound on the gradient alone this does not stop early merely because the curvature collapses
    (nearly separable classes at large C, where the gradient is tiny far from the optimum). The rule
    needs at least one curvature pair, so every run takes at least one step. A run also stops, marked
    not converged, when no step decreases the exact objective any more (the precision floor) or after
    ``max_iter`` iterations.
    """
    m = V.shape[0]
    mem = _Memory(V, memory)
    n_iter = np.zeros(m, dtype=np.int64)
    converged = np.zeros(m, dtype=bool)
    active = torch.arange(m, device=V.device)
    waiting = active[:0]               # runs that met the rule on the model, until the next exact pass
    f, g = problem.exact(V)
    anchor = (f.clone(), g.clone(), V.clone())
    exact, model_steps = True, 0       # whether f, g of the active runs are exact
    while True:
        if problem.modelling and not exact and (len(active) == 0 or model_steps >= max_model_steps):
            active = torch.sort(torch.cat([active, waiting])).values
            waiting = active[:0]
            anchor = _reanchor(problem, V, anchor, mem)
            f, g = anchor[0][active], anchor[1][active]
            exact, model_steps = True, 0
        if len(active) == 0:
            break
        d, gd = mem.direction(g, active)
        met = ((mem.count[active] > 0) & (-gd <= tol * f)) | (g.flatten(1).abs().amax(dim=1) == 0)
        if bool(met.any()):
            if exact or not problem.modelling:
                converged[_host(active[met])] = True
            else:
                waiting = torch.cat([waiting, active[met]])
            keep = ~met
            active, f, g, d, gd = active[keep], f[keep], g[keep], d[keep], gd[keep]
            if len(active) == 0:
                continue
        if int(n_iter[_host(active)].max()) >= max_iter:
            break
        n_iter[_host(active)] += 1
        f_new, g_new, moved = _line_search(problem, V, active, f, g, d, gd)
        _remember(mem, active, moved, g, g_new, d)
        stuck = ~moved  # no decrease representable in this precision: as close as it gets
        if bool(stuck.any()) and problem.modelling and not exact:
            waiting = torch.cat([waiting, active[stuck]])   # on the model only: the exact pass decides
        f, g = f_new, g_new
        exact, model_steps = not problem.modelling, model_steps + 1
        if bool(stuck.any()):
            active, f, g = active[moved], f[moved], g[moved]
    return V, n_iter, converged


def _line_search(problem: Problem, V: torch.Tensor, active: torch.Tensor, f: torch.Tensor, g: torch.Tensor,
                 d: torch.Tensor, gd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Armijo backtracking for every active run at once; moves ``V`` in place and returns the new
    (f, g) of the active runs and which of them moved (``d`` is overwritten with the step taken)."""
    V_old = V[active]
    t = torch.ones(len(active), dtype=V.dtype, device=V.device)
    f_new, g_new = f.clone(), g.clone()
    moved = torch.zeros(len(active), dtype=torch.bool, device=V.device)
    pending = torch.arange(len(active), device=V.device)
    for _ in range(_MAX_HALVINGS):
        Vt = V_old[pending] + _col(t[pending], d) * d[pending]
        trial = V.clone()
        trial[active[pending]] = Vt
        ft, gt = problem.model(trial)
        ft, gt = ft[active[pending]], gt[active[pending]]
        ok = ft <= f[pending] + _ARMIJO * t[pending].double() * gd[pending].double()
        acc = pending[ok]
        f_new[acc], g_new[acc], moved[acc] = ft[ok], gt[ok], True
        V[active[acc]] = Vt[ok]
        pending = pending[~ok]
        if len(pending) == 0:
            break
        t[pending] *= 0.5
    d.copy_(V[active] - V_old)
    return f_new, g_new, moved


def _remember(mem: _Memory, active: torch.Tensor, moved: torch.Tensor, g: torch.Tensor, g_new: torch.Tensor,
              s: torch.Tensor) -> None:
    """Store the curvature pair of every run that moved and whose pair has positive curvature."""
    yv = g_new - g
    sy = batch_dot(s, yv)
    good = moved & (sy > 1e-10 * s.flatten(1).norm(dim=1) * yv.flatten(1).norm(dim=1))
    gi = good.nonzero().squeeze(1)
    if len(gi):
        mem.add(active[gi], s[gi], yv[gi], sy[gi])


def _reanchor(problem: Problem, V: torch.Tensor, anchor: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
              mem: _Memory) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One exact pass at the current point; runs whose exact objective rose since the last anchor go
    back to it (with a fresh memory), and the problem stops modelling. Returns the new anchor."""
    f, g = problem.exact(V)
    f0, g0, V0 = anchor
    worse = f > f0
    if bool(worse.any()):
        V[worse], f[worse], g[worse] = V0[worse], f0[worse], g0[worse]
        mem.count[worse] = 0
        problem.stop_modelling()
    return f, g, V.clone()
