"""The lockstep L-BFGS and its working-set protocol, on toy problems whose model can be told apart from
the objective: convergence must be certified on the objective, and a misleading model abandoned."""

from __future__ import annotations

import numpy as np
import torch

from attrib.probe.lbfgs import batched_lbfgs


class Quartic:
    """f(V) = 1/2 |V - a|^2 + c/4 sum V^4 per run. While modelling, ``model`` is the second-order
    Taylor expansion at the last exact point (``bend`` < 1 flattens its curvature)."""

    def __init__(self, a: torch.Tensor, c: float = 0.5, bend: float = 1.0, modelling: bool = True):
        self.a, self.c, self.bend, self.may_model = a, c, bend, modelling
        self.modelling = False
        self.exact_calls = 0

    def _exact(self, V):
        f = 0.5 * ((V - self.a) ** 2).flatten(1).sum(1) + self.c / 4 * (V ** 4).flatten(1).sum(1)
        return f.double(), V - self.a + self.c * V ** 3

    def exact(self, V):
        self.exact_calls += 1
        f, g = self._exact(V)
        self.modelling = self.may_model
        self.anchor = (f, g, V.clone(), self.bend * (1 + 3 * self.c * V ** 2))
        return f, g

    def model(self, V):
        if not self.modelling:
            return self._exact(V)
        f0, g0, V0, h = self.anchor
        s = V - V0
        return f0 + ((g0 * s).flatten(1).sum(1) + 0.5 * (h * s * s).flatten(1).sum(1)).double(), g0 + h * s

    def stop_modelling(self):
        self.may_model = self.modelling = False


def _optimum(a: torch.Tensor, c: float = 0.5) -> torch.Tensor:
    V = a.clone()
    for _ in range(100):                      # Newton, coordinate-wise: the problem is separable
        V = V - (V - a + c * V ** 3) / (1 + 3 * c * V ** 2)
    return V


def test_convergence_is_certified_on_the_objective_not_the_model():
    a = torch.from_numpy(np.random.default_rng(0).normal(size=(3, 6, 2)))
    toy = Quartic(a, c=0.2)
    V, n_iter, converged = batched_lbfgs(toy, torch.zeros_like(a), tol=1e-14, max_iter=200, memory=5)
    assert converged.all() and toy.may_model   # never misled, so it kept modelling
    # the first model's minimiser is one Newton step from 0, far from the optimum: stopping there on
    # the model's word would fail this
    np.testing.assert_allclose(V.numpy(), _optimum(a, c=0.2).numpy(), atol=1e-6)
    assert toy.exact_calls >= 3


def test_a_model_that_makes_the_objective_worse_is_abandoned():
    a = torch.from_numpy(np.random.default_rng(1).normal(size=(2, 5, 3)) * 2)
    toy = Quartic(a, bend=0.05)              # 20x too flat: its steps overshoot and f rises
    V, _, converged = batched_lbfgs(toy, torch.zeros_like(a), tol=1e-14, max_iter=500, memory=5)
    assert not toy.may_model                 # it stopped modelling ...
    assert converged.all()                   # ... and still converged, from the last good point
    np.testing.assert_allclose(V.numpy(), _optimum(a).numpy(), atol=1e-6)


def test_without_a_model_every_evaluation_is_exact():
    a = torch.from_numpy(np.random.default_rng(2).normal(size=(4, 3)))
    toy = Quartic(a, modelling=False)
    V, n_iter, converged = batched_lbfgs(toy, torch.zeros_like(a), tol=1e-14, max_iter=200, memory=5)
    assert converged.all() and toy.exact_calls == 1
    np.testing.assert_allclose(V.numpy(), _optimum(a).numpy(), atol=1e-6)
