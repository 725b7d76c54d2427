"""The batched C-path solver: its building blocks against plain formulas, and solver choices (chunked
rows, group sizes) that must not change the solution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attrib.probe.logreg_objective import softmax_minus_onehot
from attrib.probe.logreg_path import fit_logreg_path, torch_device


def clusters(n_per_class=80, dim=10, n_classes=4, seed=0, offset=8.0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(n_classes, dim)) * 1.5
    X = np.concatenate([means[c] + rng.normal(size=(n_per_class, dim)) * np.exp(0.5 * rng.normal(size=dim))
                        for c in range(n_classes)])
    X[:, 1] += offset  # a huge-offset dimension, like CLIP's
    return X, np.repeat(np.arange(n_classes), n_per_class)


def probs(path, j, X):
    Z = X @ path.coef[j].T + path.intercept[j]
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    return P / P.sum(axis=1, keepdims=True)


def test_softmax_minus_onehot_and_loss_match_the_textbook_formulas():
    rng = np.random.default_rng(1)
    g, K, r = 3, 5, 200
    L = torch.from_numpy(rng.normal(size=(g, K, r)) * 4)
    L[:, 2, :50] += 60.0                       # confidently classified rows: loss ~ 1e-25, no cancellation
    y = torch.from_numpy(rng.integers(0, K, r))
    y[:50] = 2
    logp = torch.log_softmax(L, dim=1)
    want_loss = -logp.gather(1, y.view(1, 1, -1).expand(g, 1, r)).squeeze(1)
    want_G = logp.exp() - torch.nn.functional.one_hot(y, K).T.double()[None]
    # where log_softmax cancels to 0, the loss is sum_{k != y} exp(L_k - L_y) (log1p(x) = x at x < 1e-16)
    Ly = L.gather(1, y.view(1, 1, -1).expand(g, 1, r))
    G, loss = softmax_minus_onehot(L.clone(), y)
    np.testing.assert_allclose(G.numpy(), want_G.numpy(), atol=1e-12)
    np.testing.assert_allclose(loss[:, 50:].numpy(), want_loss[:, 50:].numpy(), rtol=1e-10)
    assert (want_loss[:, :50] == 0).any()                                # the textbook formula loses them
    assert (loss[:, :50] > 0).all() and (loss[:, :50] < 1e-15).all()     # ours does not
    others = torch.exp(L[:, :, :50] - Ly[:, :, :50]).masked_fill(
        torch.nn.functional.one_hot(y[:50], K).T.bool()[None], 0.0).sum(dim=1)
    np.testing.assert_allclose(loss[:, :50].numpy(), others.numpy(), rtol=1e-10)


def test_rows_in_chunks_give_the_same_path():
    X, y = clusters(seed=2)
    Cs = np.logspace(-3, 3, 6)
    whole = fit_logreg_path(X, y, 4, Cs, dtype="float64", tol=1e-12)
    chunked = fit_logreg_path(X, y, 4, Cs, dtype="float64", tol=1e-12, max_batch_elems=37 * 5 * 4)
    assert whole.converged.all() and chunked.converged.all()
    np.testing.assert_allclose(chunked.coef, whole.coef, atol=1e-5 * np.abs(whole.coef).max())
    for j in range(len(Cs)):
        np.testing.assert_allclose(probs(chunked, j, X), probs(whole, j, X), atol=1e-6)


def test_group_sizes_give_the_same_path_and_count_products():
    X, y = clusters(seed=3)
    Cs = np.logspace(-2, 2, 7)
    paths = [fit_logreg_path(X, y, 4, Cs, dtype="float64", tol=1e-12, group_size=g) for g in (1, 3, 7)]
    for p in paths[1:]:
        np.testing.assert_allclose(p.coef, paths[0].coef, atol=1e-5 * np.abs(paths[0].coef).max())
    for p in paths:
        # every C takes at least one step, and each group's steps share products
        assert p.n_products >= p.n_iter.max() + 1
    assert paths[0].n_products > paths[2].n_products   # one C at a time: more passes over the data


def test_weights_sum_to_zero_over_classes_and_the_input_is_left_alone():
    """The data term ignores a vector added to every class, so the optimum's weights sum to zero over
    the classes; the solver keeps its iterates there. It works on its own copy of the features."""
    X, y = clusters(seed=4)
    X32 = X.astype(np.float32)
    before = X32.copy()
    path = fit_logreg_path(X32, y, 4, [1e-2, 1.0, 100.0])
    assert np.array_equal(X32, before)
    scale = np.abs(path.coef).max(axis=(1, 2))
    assert (np.abs(path.coef.sum(axis=1)).max(axis=1) <= 1e-4 * scale).all()


def test_both_product_orientations_give_the_same_path(monkeypatch):
    """With several threads the logits are computed rows first (``Z W``), with one as ``W^T Z^T``: the
    same path either way."""
    from attrib.probe import logreg_path

    seen = []

    class Recording(logreg_path.Objective):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.append(self.rows_first)

    monkeypatch.setattr(logreg_path, "Objective", Recording)
    monkeypatch.setattr(logreg_path, "_SMALL_PROBLEM", 0)   # never limit this small problem to one thread
    X, y = clusters(seed=5)
    Cs = np.logspace(-2, 2, 5)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        rows_first = fit_logreg_path(X, y, 4, Cs, dtype="float64", tol=1e-12)
        torch.set_num_threads(1)
        columns_first = fit_logreg_path(X, y, 4, Cs, dtype="float64", tol=1e-12)
    finally:
        torch.set_num_threads(before)
    assert seen == [True, False]
    assert rows_first.converged.all() and columns_first.converged.all()
    np.testing.assert_allclose(rows_first.coef, columns_first.coef, atol=1e-5 * np.abs(columns_first.coef).max())
    for j in range(len(Cs)):
        np.testing.assert_allclose(probs(rows_first, j, X), probs(columns_first, j, X), atol=1e-6)


def test_a_working_set_gives_the_same_path_in_fewer_passes():
    """At large C the classes separate and a few rows carry the gradient: the solver steps on those
    (the others frozen to first order) between exact passes, and must land where stepping on all rows
    does."""
    X, y = clusters(n_per_class=150, seed=6, offset=3.0)
    Cs = np.logspace(-2, 4, 10)
    every_row = fit_logreg_path(X, y, 4, Cs, dtype="float64", tol=1e-12, working_set_mass=1)
    working_set = fit_logreg_path(X, y, 4, Cs, dtype="float64", tol=1e-12)
    assert every_row.converged.all() and working_set.converged.all()
    assert every_row.n_products == int(every_row.n_products)
    assert working_set.n_products < every_row.n_products
    for j in range(len(Cs)):
        np.testing.assert_allclose(probs(working_set, j, X), probs(every_row, j, X), atol=1e-6)
    with pytest.raises(ValueError, match=r"working_set_mass must be in \(0, 1\], got 0"):
        fit_logreg_path(X, y, 4, Cs, working_set_mass=0)


def test_every_tensor_of_the_solve_lives_on_the_requested_device():
    """No GPU on the test machines, so the CUDA path is checked the way it can fail: a tensor made
    without the solver's device. Under a ``meta`` default device every such tensor lands on ``meta``,
    and the first operation mixing it with the rows (on the CPU) raises; the path (warm starts,
    working sets, several groups) must come out the same as without it."""
    X, y = clusters(n_per_class=150, seed=6, offset=3.0)
    Cs = np.logspace(-2, 4, 10)
    plain = fit_logreg_path(X, y, 4, Cs, device="cpu")
    with torch.device("meta"):
        placed = fit_logreg_path(X, y, 4, Cs, device="cpu")
    assert placed.n_products < 10 * len(Cs)      # the working sets were used
    np.testing.assert_array_equal(placed.coef, plain.coef)
    np.testing.assert_array_equal(placed.n_iter, plain.n_iter)


def test_rows_rotated_on_the_device_give_the_same_path(monkeypatch):
    """On a GPU the rows are rotated into the eigenbasis after they reach it (torch), on the CPU before
    (numpy). The GPU's branch, run here on the CPU, must land on the same optimum."""
    from attrib.probe import logreg_path

    X, y = clusters(n_per_class=150, seed=6, offset=3.0)
    Cs = np.logspace(-2, 4, 10)
    by_numpy = fit_logreg_path(X, y, 4, Cs, dtype="float64", tol=1e-11)
    monkeypatch.setattr(logreg_path, "_rotate_on_device", lambda device: True)
    with torch.device("meta"):
        by_torch = fit_logreg_path(X, y, 4, Cs, dtype="float64", tol=1e-11)
    assert by_torch.converged.all() and by_numpy.converged.all()
    for j in range(len(Cs)):
        np.testing.assert_allclose(probs(by_torch, j, X), probs(by_numpy, j, X), atol=1e-6)


def test_devices_are_checked_and_named():
    assert torch_device("cpu") == torch.device("cpu")
    assert torch_device(" CPU ") == torch.device("cpu")
    assert torch_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "mps", "", "cuda:x"):
        with pytest.raises(ValueError, match=f"device '{bad}': use 'cpu', 'cuda', 'cuda:N' or 'auto'"):
            torch_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda': torch sees no CUDA device on this machine"):
            fit_logreg_path(*clusters(), 4, [1.0], device="cuda")


def test_a_screen_solves_only_the_chosen_C_to_tol_and_asks_again_after_each_refinement():
    """The loose path, then the C the screen chooses to the full tolerance, from their loose solutions;
    the screen sees each refinement (in the raw feature axes) and is asked until it wants nothing new."""
    from attrib.probe.logreg_path import Screen

    X, y = clusters(seed=5)
    Cs = np.logspace(-3, 3, 9)
    ref = fit_logreg_path(X, y, 4, Cs, dtype="float64", tol=1e-12)
    seen: list[np.ndarray] = []

    def choose(coef, intercept):
        seen.append(coef.copy())
        return [2] if len(seen) == 1 else [2, 6]   # a refinement "brings C[6] close to the best"

    path = fit_logreg_path(X, y, 4, Cs, dtype="float64", tol=1e-12, screen=Screen(1e-3, choose))
    assert len(seen) == 3   # [2], then [2, 6], then nothing new
    assert path.solved_tol.tolist() == [1e-12 if j in (2, 6) else 1e-3 for j in range(len(Cs))]
    scale = np.abs(ref.coef).max()
    for j in (2, 6):  # solved to tol: the tight path's solution
        np.testing.assert_allclose(path.coef[j], ref.coef[j], atol=1e-6 * scale)
        np.testing.assert_allclose(probs(path, j, X), probs(ref, j, X), atol=1e-5)
    loose = max(np.abs(path.coef[j] - ref.coef[j]).max() for j in (0, 4, 8))
    assert loose > 1e-4 * scale   # the others were left at the screen's tolerance
    # the screen was shown the raw-axis solutions, refined ones included
    np.testing.assert_allclose(seen[1][2], ref.coef[2], atol=1e-6 * scale)
    np.testing.assert_allclose(seen[2][6], ref.coef[6], atol=1e-6 * scale)
    assert path.converged.all()


def test_a_screen_no_looser_than_tol_changes_nothing():
    from attrib.probe.logreg_path import Screen

    X, y = clusters(seed=6)
    Cs = np.logspace(-2, 2, 5)
    asked = []
    plain = fit_logreg_path(X, y, 4, Cs, tol=1e-5)
    same = fit_logreg_path(X, y, 4, Cs, tol=1e-5, screen=Screen(1e-5, lambda c, b: asked.append(1) or [0]))
    assert not asked and np.array_equal(same.coef, plain.coef) and (same.solved_tol == 1e-5).all()


def test_a_screen_choosing_outside_the_path_is_an_error():
    from attrib.probe.logreg_path import Screen

    X, y = clusters(seed=7)
    with pytest.raises(ValueError, match=r"chose C indices \[3\]; the path has 3"):
        fit_logreg_path(X, y, 4, [0.1, 1.0, 10.0], screen=Screen(1e-3, lambda c, b: [3]))
