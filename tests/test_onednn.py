"""The C path's products on oneDNN: checked against plain arithmetic before use, replaced by torch's BLAS
when the operator is missing or wrong, and the same solutions either way."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attrib.probe import onednn
from attrib.probe.logreg_objective import _repeating
from attrib.probe.logreg_path import fit_logreg_path

from test_logreg_path import clusters, probs

REAL_AVX512 = onednn._avx512


@pytest.fixture
def fresh_check(monkeypatch):
    """Each test checks the operator itself (the module checks it once per process), as on a CPU with
    AVX-512 (the operator works without it, only not faster: the tests run it on any x86 machine)."""
    monkeypatch.setattr(onednn, "_CHECKED", {})
    monkeypatch.setattr(onednn, "_avx512", lambda: True)


@pytest.fixture
def counted(monkeypatch, fresh_check):
    """Count the products oneDNN computes."""
    real = onednn._onednn_nt
    calls = []

    def counting(a, b):
        calls.append((tuple(a.shape), tuple(b.shape)))
        return real(a, b)

    monkeypatch.setattr(onednn, "_onednn_nt", counting)
    return calls


def test_this_torch_has_the_operator_and_it_multiplies_the_solvers_layouts():
    """torch's x86 builds carry oneDNN; a torch whose operator went missing or changed must show up here,
    not only as a slower benchmark."""
    assert torch.backends.mkldnn.is_available()
    f = onednn._checked(onednn._onednn_nt)
    assert f is not None
    gen = torch.Generator().manual_seed(1)
    Z = torch.randn(3000, 96, generator=gen)
    W = torch.randn(25, 96, generator=gen)
    G = torch.randn(25, 2000, generator=gen)
    for a, b in ((W, Z[500:2500]), (G, Z[500:2500].T), (Z[:700], W)):
        want = a.double() @ b.double().T
        np.testing.assert_allclose(f(a, b).double().numpy(), want.numpy(), rtol=0,
                                   atol=1e-5 * float(want.abs().max()))


@pytest.mark.parametrize("broken", ["wrong", "raises"])
def test_a_wrong_or_failing_operator_is_never_used(monkeypatch, fresh_check, broken):
    def wrong(a, b):
        return torch.mm(a, b.T) * 1.001

    def raises(a, b):
        raise RuntimeError("no kernel for this CPU")

    monkeypatch.setattr(onednn, "_onednn_nt", {"wrong": wrong, "raises": raises}[broken])
    assert onednn.onednn_nt() is None and not onednn.available()
    X, y = clusters(n_per_class=150, seed=6, offset=3.0)
    Cs = np.logspace(-2, 4, 10)
    auto = fit_logreg_path(X.astype(np.float32), y, 4, Cs)
    blas = fit_logreg_path(X.astype(np.float32), y, 4, Cs, products="blas")
    np.testing.assert_array_equal(auto.coef, blas.coef)      # torch's BLAS, exactly as asked for
    np.testing.assert_array_equal(auto.n_iter, blas.n_iter)


def test_onednn_and_blas_products_give_the_same_path(counted):
    """Only the float32 rounding of the sums differs: every C converges to the same solution."""
    X, y = clusters(n_per_class=400, dim=40, seed=7, offset=3.0)
    Cs = np.logspace(-3, 4, 15)
    blas = fit_logreg_path(X, y, 4, Cs, products="blas")
    assert not counted                                        # "blas": oneDNN is never called
    auto = fit_logreg_path(X, y, 4, Cs)
    assert len(counted) > 2 * 15                              # both products of every pass, and the rotation
    assert auto.converged.all() and blas.converged.all()
    assert auto.n_products < 10 * len(Cs)                     # working sets were used (sizes rounded)
    for j in range(len(Cs)):
        np.testing.assert_allclose(probs(auto, j, X), probs(blas, j, X), atol=2e-4)


def test_float64_and_other_devices_keep_torchs_own_products(counted):
    X, y = clusters(seed=8)
    fit_logreg_path(X, y, 4, [0.1, 1.0], dtype="float64")
    assert not counted                                        # oneDNN is float32 only
    assert onednn.onednn_for("auto", torch.zeros(2, 2, device="meta")) is None
    assert onednn.onednn_for("auto", torch.zeros(2, 2)) is not None
    with pytest.raises(ValueError, match="products='fast': use 'auto'"):
        onednn.onednn_for("fast", torch.zeros(2, 2))


def test_onednn_only_where_torch_runs_avx512_kernels(monkeypatch, fresh_check):
    """Held to AVX2, oneDNN's products were no faster than MKL's (the module docstring): torch's BLAS."""
    monkeypatch.setattr(onednn, "_avx512", REAL_AVX512)      # the fixture's stand-in undone
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert not onednn._avx512() and onednn.onednn_nt() is None and not onednn.available()
    monkeypatch.setattr(onednn, "_CHECKED", {})
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert onednn._avx512() and onednn.onednn_nt() is not None


def test_working_set_sizes_are_rounded_up_to_few_repeating_values():
    sizes = np.arange(1, 100_000)
    rounded = np.array([_repeating(int(s)) for s in sizes])
    assert (rounded >= sizes).all() and (rounded <= sizes * (1 + 1 / 16)).all()
    assert len(np.unique(rounded[1535:20000])) <= 16 * 4 + 1  # 16 per doubling from 1,536 to 20,000 rows
    assert [_repeating(s) for s in (1, 31, 33, 1536, 1537, 4097)] == [1, 31, 34, 1536, 1536 + 64, 4096 + 256]
