"""Benchmark: the 45-value C path of the logistic probe against the paper's code (scikit-learn per C).

Goal (issue 5): for 5 classes x 4000 shots x 768 dims the whole default C path (10^linspace(-6, 5, 45))
must run >= 20x faster than ``LogisticRegression(C, tol=1e-12, max_iter=1000)`` fitted once per C,
selecting the same C (or a neighbouring grid value) with test accuracy within 0.2 percentage points.

There are no real CLIP features on a development machine, so the data are SYNTHETIC and say so: Gaussian
classes with a steep power-law covariance spectrum in a random basis, class-specific anisotropic scales,
and a few dimensions with huge offsets and variance, like the outlier dimensions of CLIP's intermediate
blocks (the reason raw features are hard for plain L-BFGS). Both solvers get the same float32 arrays
and the same raw (unstandardised) objective; C is selected by the best validation accuracy, the ``clean``
protocol's criterion, with ties going to the smaller C (the protocol breaks them by validation log-loss).

scikit-learn needs minutes per C here, so by default it is timed on an evenly spaced sample of the grid
(every ``--sklearn-every``-th value: C = 1e-6, 0.32, 1e5) and its path time is extrapolated as
mean x 45 — said so in the output. ``--sklearn-every 1`` fits every C (an hour or more) and checks the
selection on the full grid.

    python -m attrib.bench probe                                  # a few minutes
    python -m attrib.bench.probe --sklearn-every 1 --sklearn-results sk.json   # the full comparison

``--sklearn-results FILE`` keeps every scikit-learn fit's numbers (seconds, iterations, accuracies) as it
finishes, so an interrupted full comparison resumes, and attrib's side can be re-measured against it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attrib import atomic
from attrib.bench.synthetic import ClipLikeBlock
from attrib.probe.geometry import logsumexp, softmax
from attrib.probe.heads import DEFAULT_CS, LogisticProbe


def synthetic_clip_like(n_classes: int = 5, n_train: int = 4000, n_val: int = 1000, n_test: int = 2000,
                        dim: int = 768, seed: int = 0, separation: float = 0.12, n_massive: int = 4
                        ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Class-structured float32 features shaped like CLIP CLS tokens (synthetic; see module docstring).

    Returns {"train"|"val"|"test": (X, y)} with ``n_*`` rows per class. ``separation`` scales the
    distance between class means (0.12 gives ~98.5% best accuracy, near the paper's 97.8%).
    """
    rng = np.random.default_rng(seed)
    block = ClipLikeBlock.draw(n_classes, dim, separation, rng, n_massive=n_massive)
    out = {}
    for name, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        X = np.concatenate([block.sample(c, n, rng) for c in range(n_classes)])
        out[name] = (X, np.repeat(np.arange(n_classes), n))
    return out


def _select(val_acc: np.ndarray) -> int:
    """Best validation accuracy; ties go to the smaller C (the first on the ascending grid)."""
    return int(np.flatnonzero(val_acc >= val_acc.max() - 1e-12)[0])


def _acc(P: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(P.argmax(axis=1) == y))


@contextlib.contextmanager
def _limit_threads(n: int | None):
    if n is None:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(before)


def _load_sklearn(path: Path | None, key: str) -> dict[int, dict]:
    if path is None or not path.exists():
        return {}
    return {int(j): v for j, v in json.loads(path.read_text()).get(key, {}).items()}


def _save_sklearn(path: Path | None, key: str, fits: dict[int, dict]) -> None:
    if path is None:
        return
    everything = json.loads(path.read_text()) if path.exists() else {}
    everything[key] = {str(j): v for j, v in sorted(fits.items())}
    atomic.write_text(path, json.dumps(everything, indent=1))


def _objective(X: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray, C: float) -> float:
    """The shared objective, mean form, in float64: mean log-loss + ||W||^2 / (2 C n)."""
    L = X @ W.T + b
    return float(np.mean(logsumexp(L) - L[np.arange(len(y)), y]) + (W ** 2).sum() / (2 * C * len(y)))


def run(classes: int, shots: int, dim: int, val: int, test: int, seed: int, sklearn_every: int,
        threads: int | None, sklearn_results: Path | None = None, massive: int = 4, repeats: int = 3) -> dict:
    import torch

    t0 = time.perf_counter()
    data = synthetic_clip_like(classes, shots, val, test, dim, seed, n_massive=massive)
    print(f"data: SYNTHETIC CLIP-like features (not real CLIP): {classes} classes x {shots} train / {val} val / "
          f"{test} test per class, {dim} dims, {massive} huge-offset dims, power-law spectrum "
          f"({time.perf_counter() - t0:.1f} s to generate)", flush=True)
    key = f"classes={classes} shots={shots} dim={dim} val={val} test={test} seed={seed} massive={massive}"
    with _limit_threads(threads):
        print(f"threads: torch {torch.get_num_threads()}" + (f" (BLAS limited to {threads})" if threads else ""))
        ours = _time_ours(data, repeats)
        sample = list(range(0, len(ours.Cs), sklearn_every))
        fits, dobj = _compare_sklearn(data, ours, sample, sklearn_every, threads, sklearn_results, key)
    return _verdict(ours, sample, fits, dobj)


@dataclass
class _Ours:
    """attrib's path on the benchmark's data: the heads, the median time, the accuracies along the path."""

    Cs: np.ndarray
    heads: list
    seconds: float
    val: np.ndarray
    test: np.ndarray
    chosen: int


def _time_ours(data: dict, repeats: int) -> _Ours:
    """Time ``LogisticProbe.fit_path`` (median of ``repeats``, after a warm-up) and select its C."""
    Cs = np.asarray(DEFAULT_CS)
    (Xtr, ytr), (Xva, yva), (Xte, yte) = data["train"], data["val"], data["test"]
    LogisticProbe(C=1.0).fit(Xtr[:: max(1, len(Xtr) // 200)], ytr[:: max(1, len(ytr) // 200)])  # warm-up
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        heads = LogisticProbe.fit_path(Xtr, ytr, Cs)
        times.append(time.perf_counter() - t0)
    val = np.array([_acc(h.decision_function(Xva), yva) for h in heads])
    ours = _Ours(Cs, heads, float(np.median(times)), val,
                 np.array([_acc(h.decision_function(Xte), yte) for h in heads]), _select(val))
    j = ours.chosen
    print(f"attrib LogisticProbe.fit_path, {len(Cs)} C values, float32: {ours.seconds:.1f} s (median of "
          f"{', '.join(f'{t:.1f}' for t in times)}; L-BFGS iterations per C: max "
          f"{max(h.n_iter_ for h in heads)}, converged {sum(h.converged_ for h in heads)}/{len(Cs)})")
    print(f"  selected C = {Cs[j]:.3g} (grid index {j}): val {100 * val[j]:.2f} %, "
          f"test {100 * ours.test[j]:.2f} %", flush=True)
    return ours


def _compare_sklearn(data: dict, ours: _Ours, sample: list[int], every: int, threads: int | None,
                     results: Path | None, key: str) -> tuple[dict[int, dict], dict[int, float]]:
    """Fit scikit-learn at the ``sample`` grid positions (or reuse ``results``), print a row for each, and
    return its fits and the relative objective gap ``dobj`` at each."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    Cs, heads = ours.Cs, ours.heads
    (Xtr, ytr), (Xva, yva), (Xte, yte) = data["train"], data["val"], data["test"]
    X64 = Xtr.astype(np.float64)
    full = len(sample) == len(Cs)
    print(f"sklearn LogisticRegression(C, tol=1e-12, max_iter=1000) (the paper's code), on "
          f"{'all' if full else len(sample)} of {len(Cs)} C values"
          + ("" if full else f" (every {every}th grid value)") + ". dobj: sklearn's objective "
          "minus attrib's, relative (> 0: attrib's solution is the better one)")
    print(f"  {'idx':>3} {'C':>9} {'seconds':>8} {'iters':>5} {'sk val':>7} {'sk test':>7} "
          f"{'at val':>7} {'at test':>7} {'max|dp|':>8} {'dobj':>9}")
    fits = _load_sklearn(results, key)
    dobj = {}
    for j in sample:
        if j not in fits:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                t0 = time.perf_counter()
                lr = LogisticRegression(C=Cs[j], tol=1e-12, max_iter=1000).fit(Xtr, ytr)
                seconds = time.perf_counter() - t0
            fits[j] = {"C": float(Cs[j]), "seconds": seconds, "iters": int(np.max(lr.n_iter_)),
                       "val": float(lr.score(Xva, yva)), "test": float(lr.score(Xte, yte)),
                       "threads": threads, "coef": lr.coef_.tolist(), "intercept": lr.intercept_.tolist()}
            _save_sklearn(results, key, fits)
        r = fits[j]
        W, b = np.asarray(r["coef"], dtype=np.float64), np.asarray(r["intercept"], dtype=np.float64)
        dp = np.abs(softmax(Xte @ W.T + b) - heads[j].predict_proba(Xte)).max()
        f_at = _objective(X64, ytr, heads[j].coef_, heads[j].intercept_, Cs[j])
        dobj[j] = (_objective(X64, ytr, W, b, Cs[j]) - f_at) / f_at
        print(f"  {j:>3} {Cs[j]:>9.2e} {r['seconds']:>8.1f} {r['iters']:>5} {100 * r['val']:>7.2f} "
              f"{100 * r['test']:>7.2f} {100 * ours.val[j]:>7.2f} {100 * ours.test[j]:>7.2f} {dp:>8.2g} "
              f"{dobj[j]:>+9.1e}", flush=True)
    return fits, dobj


def _verdict(ours: _Ours, sample: list[int], fits: dict[int, dict], dobj: dict[int, float]) -> dict:
    """Print the speed-up, the objective gaps and the selection against the goals; the result record."""
    Cs, j_ours = ours.Cs, ours.chosen
    full = len(sample) == len(Cs)
    sk_val = {j: fits[j]["val"] for j in sample}
    sk_test = {j: fits[j]["test"] for j in sample}
    sk_path = float(np.mean([fits[j]["seconds"] for j in sample]) * len(Cs))
    speedup = sk_path / ours.seconds
    how = "measured" if full else f"EXTRAPOLATED: mean of {len(sample)} evenly spaced fits x {len(Cs)}"
    print(f"sklearn 45-value path: {sk_path:.0f} s ({how})")
    print(f"speed-up: {speedup:.0f}x (goal >= 20x): {'PASS' if speedup >= 20 else 'FAIL'}")
    worse = [j for j in sample if dobj[j] > 1e-6]
    print(f"objective: sklearn's solution is above attrib's (by > 1e-6 relative) at {len(worse)} of {len(sample)} "
          f"C values, by up to {max(dobj.values()):.1e}; attrib's is above sklearn's by at most "
          f"{max(0.0, -min(dobj.values())):.1e}")
    result = {"seconds_attrib": ours.seconds, "seconds_sklearn_path": sk_path, "speedup": speedup,
              "C_attrib": float(Cs[j_ours]), "full": full, "max_dobj": max(dobj.values())}
    if full:
        j_sk = _select(np.array([sk_val[j] for j in range(len(Cs))]))
        d_test = 100 * (ours.test[j_ours] - sk_test[j_sk])
        same = abs(j_sk - j_ours) <= 1
        print(f"selection: sklearn C = {Cs[j_sk]:.3g} (index {j_sk}, val {100 * sk_val[j_sk]:.2f} %), attrib C = "
              f"{Cs[j_ours]:.3g} (index {j_ours}, val {100 * ours.val[j_ours]:.2f} %): "
              f"{'same or neighbouring' if same else 'DIFFERENT'}; test accuracy attrib - sklearn at their "
              f"choices: {d_test:+.2f} pp (goal: same or neighbouring C, within 0.2 pp): "
              f"{'PASS' if same and abs(d_test) <= 0.2 else 'FAIL'}")
        if not same:
            print(f"  on sklearn's own validation curve attrib's C scores {100 * sk_val[j_ours]:.2f} % (its best: "
                  f"{100 * sk_val[j_sk]:.2f} %)" + (
                      "; sklearn's choice is made from solutions that did not reach the optimum of the objective "
                      "both minimise (see dobj)" if j_sk in worse else ""))
        result.update(C_sklearn=float(Cs[j_sk]), same_selection=same)
    else:
        j_near = min(sample, key=lambda j: abs(j - j_ours))
        d_test = 100 * (ours.test[j_near] - sk_test[j_near])
        print(f"test accuracy attrib - sklearn at the sampled C nearest attrib's choice (C = {Cs[j_near]:.3g}): "
              f"{d_test:+.2f} pp. The selection itself is checked on the full grid only "
              f"(python -m attrib.bench.probe --sklearn-every 1, an hour or more)")
    result["test_pp_difference"] = d_test
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m attrib.bench.probe", description=__doc__.split("\n\n")[0])
    ap.add_argument("--classes", type=int, default=5)
    ap.add_argument("--shots", type=int, default=4000, help="training images per class")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--val", type=int, default=1000, help="validation images per class")
    ap.add_argument("--test", type=int, default=2000, help="test images per class")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--massive", type=int, default=4, help="number of huge-offset dimensions (CLIP-like: 4)")
    ap.add_argument("--repeats", type=int, default=3, help="attrib's path is timed this many times (median)")
    ap.add_argument("--sklearn-every", type=int, default=22,
                    help="fit scikit-learn on every N-th grid value (1 = all 45, the full comparison)")
    ap.add_argument("--threads", type=int, default=None, help="limit torch and BLAS threads (default: as set)")
    ap.add_argument("--sklearn-results", type=Path, default=None,
                    help="JSON file keeping scikit-learn's per-C results: a rerun reuses them (resume)")
    a = ap.parse_args(argv)
    run(a.classes, a.shots, a.dim, a.val, a.test, a.seed, max(1, a.sklearn_every), a.threads, a.sklearn_results,
        a.massive, a.repeats)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
