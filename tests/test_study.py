"""Studies: one line per combination with every field, shots subsets, protocols, resume after a real
kill and after a torn line, --jobs N identical to --jobs 1, refusal to mix incompatible results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from attrib.data.sampling import SampledSplits
from attrib.data.splits import builtin_splits
from attrib.probe import protocol as P
from attrib.probe.heads import LogisticProbe
from attrib.probe.metrics import auroc, auroc_paper
from attrib.probe.scorers import SCORERS
from attrib.probe.featcache import FeatureCache
from attrib.probe.options import StudyError, parse_grid, parse_layers
from attrib.probe.results import line_key, read_results
from attrib.probe.study import StudyConfig, run_study, shots_subset
from attrib.store import FeatureSet

from synthetic_features import CentroidHead, MaxLogitScore, make_feature_set, register

TESTS = Path(__file__).parent
METRIC_KEYS = ("accuracy", "macro_f1", "auroc", "fpr95", "aupr_in", "aupr_out", "oscr", "recall", "confusion",
               "auroc_per_unknown", "unknown_predicted_as", "unknown_confusion")


@pytest.fixture(scope="module")
def fs(tmp_path_factory) -> FeatureSet:
    return make_feature_set(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(autouse=True)
def _registered(monkeypatch):
    register(monkeypatch)


def _source(fs: FeatureSet, splits=("1", "2"), **caps) -> SampledSplits:
    ok, _ = fs.status()
    return SampledSplits(fs.images, ok, {k: v for k, v in builtin_splits("demo").items() if k in splits}, **caps)


def _cfg(fs: FeatureSet, **kw) -> StudyConfig:
    base = dict(splits=_source(fs), layers=parse_layers("0;2;concat:1,2", fs.n_blocks), heads=["centroid"],
                scores=["msp", "maxlogit_t", "centroid_dist"], shots=[2, None], seeds=2)
    base.update(kw)
    return StudyConfig(**base)


def _strip(lines: list[dict]) -> dict[tuple, dict]:
    """Lines by key, without the timings (the only field allowed to differ between identical runs)."""
    return {line_key(d): {k: v for k, v in d.items() if k != "seconds"} for d in lines}


# -------------------------------------------------------------------------------------- options
def test_parse_options() -> None:
    assert parse_layers("all", 4) == [(0,), (1,), (2,), (3,)]
    assert parse_layers("8", 12) == [(8,)] and parse_layers("6-8", 12) == [(6,), (7,), (8,)]
    assert parse_layers("-1;concat:9,10,11;concat:9-11", 12) == [(11,), (9, 10, 11)]
    for bad, msg in (("12", "out of range"), ("x", "not a block"), ("5-3", "empty range"),
                     ("concat:1,1", "repeats")):
        with pytest.raises(StudyError, match=msg):
            parse_layers(bad, 12)
    assert parse_grid(["C=0.01,1,1e2", "k=1,5"]) == {"C": [0.01, 1, 100.0], "k": [1, 5]}
    with pytest.raises(StudyError, match="NAME=V1"):
        parse_grid(["C"])
    with pytest.raises(StudyError, match="not a number"):
        parse_grid(["C=1,x"])


def test_validation_and_unsupported_pairs(fs: FeatureSet) -> None:
    with pytest.raises(StudyError, match="available: .*logreg"):
        _cfg(fs, heads=["nope"]).validate()
    with pytest.raises(StudyError, match="no chosen head sweeps it"):
        _cfg(fs, grid={"k": [1, 2]}).validate()
    with pytest.raises(StudyError, match="--jobs"):
        _cfg(fs, jobs=0).validate()
    ok, skipped = _cfg(fs, heads=["logreg", "centroid"]).pairs()
    assert ("logreg", "centroid_dist") in skipped and ("centroid", "centroid_dist") in ok
    assert ("logreg", "msp") in ok


def test_bad_grid_values_are_refused_before_the_study(fs: FeatureSet, tmp_path: Path) -> None:
    """A value no fit accepts would fail every line one by one; it is refused up front, by name."""
    for heads, spec, bad in ((["knn"], "k=2.5", "2.5"), (["knn"], "k=1,0", "0"), (["logreg"], "C=0", "0"),
                             (["logreg", "knn"], "C=1,-1", "-1"), (["logreg"], "C=1,inf", "inf")):
        cfg = _cfg(fs, heads=heads, grid=parse_grid([spec]))
        with pytest.raises(StudyError, match=rf"^--grid {spec}: \S+ values must be .*, got {bad}$"):
            cfg.validate()
        with pytest.raises(StudyError, match=f"--grid {spec}"):
            run_study(fs, cfg, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # refused before anything was created
    _cfg(fs, heads=["logreg", "knn"], grid=parse_grid(["C=0.5,2", "k=1,3"])).validate()


def test_output_folder_that_cannot_be_made_is_refused(fs: FeatureSet, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    cfg = _cfg(fs, layers=[(2,)], scores=["msp"], shots=[None], seeds=1)
    with pytest.raises(StudyError, match=r"^--out .*file is a file; give a folder"):
        run_study(fs, cfg, tmp_path / "file", progress=False)
    with pytest.raises(StudyError, match=r"^--out .*file/a/b: .*file is a file, so nothing can be created"):
        run_study(fs, cfg, tmp_path / "file" / "a" / "b", progress=False)
    assert run_study(fs, cfg, tmp_path / "new" / "out", progress=False).written == 2


def test_shots_subsets_are_per_class_nested_and_seeded() -> None:
    y = np.repeat(np.arange(4), [10, 3, 7, 12])
    a = shots_subset(y, 5, seed=0)
    assert np.bincount(y[a]).tolist() == [5, 3, 5, 5]  # a class with fewer images keeps them all
    assert np.array_equal(a, shots_subset(y, 5, seed=0))
    assert set(shots_subset(y, 2, seed=0)) <= set(a) <= set(shots_subset(y, 7, seed=0))  # nested
    assert not np.array_equal(a, shots_subset(y, 5, seed=1))
    assert np.array_equal(shots_subset(y, None, seed=3), np.arange(len(y)))


def test_feature_cache_is_memory_mapped_and_exact(fs: FeatureSet, tmp_path: Path) -> None:
    rows = np.array([5, 1, 200, 77, 5])
    cache = FeatureCache.planned(tmp_path, rows, [1, 2])
    for block in (1, 2):
        cache.write_block(fs, block)
    assert isinstance(np.load(cache.paths[2], mmap_mode="r"), np.memmap)
    np.testing.assert_array_equal(cache.take((2,), rows), fs.block(2, rows))
    np.testing.assert_array_equal(cache.take((1, 2), rows[:2]), np.hstack([fs.block(1, rows[:2]),
                                                                           fs.block(2, rows[:2])]))
    with pytest.raises(StudyError, match="not read"):
        cache.take((1,), np.array([6]))


# -------------------------------------------------------------------------------------- the study
def test_one_line_per_combination_with_every_field(fs: FeatureSet, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    cfg = _cfg(fs)
    run = run_study(fs, cfg, tmp_path / "out", progress=False)
    lines = read_results(tmp_path / "out")
    assert run.written == len(lines) == 2 * 3 * 2 * 2 * 3 and not run.errors
    assert len({line_key(d) for d in lines}) == len(lines)
    assert list((tmp_path / "tmp").iterdir()) == []  # the memory-mapped arrays are cleaned up
    for d in lines:
        assert all(k in d for k in METRIC_KEYS)
        assert d["hparams"]["temperature"] in CentroidHead.default_path
        assert d["selection"]["criterion"] == "val_accuracy" and d["config"]["path"]["param"] == "temperature"
        assert d["config"]["head_params"]["note"] == "x" and set(d["seconds"]) >= {"read", "fit_path", "score"}
        assert d["classes"][0] == "real" and len(d["classes"]) == 5 and len(d["unknown"]) == 3
        assert set(d["auroc_per_unknown"]) == set(d["unknown"]) and d["n"]["test_unknown"] > 0
        per_class = d["n"]["train_per_class"]
        assert set(per_class.values()) == ({2} if d["shots"] == "2" else set(per_class.values()))
        if d["shots"] == "all":
            assert sum(per_class.values()) == d["n"]["train"] > 100
        # the clean protocol fits the training images as they are, with every default hyperparameter
        assert d["config"]["balance"] == "none" and d["n"]["train_fitted"] == d["n"]["train"]
        assert d["config"]["params"] == {} and "scores_file" not in d
    # the training subset of a (split, shots, seed) is the same for every layer, head and score
    subsets: dict[tuple, set] = {}
    for d in lines:
        subsets.setdefault((d["split"], d["shots"], d["seed"]), set()).add(d["train_rows"])
    assert all(len(v) == 1 for v in subsets.values())
    assert subsets[("1", "2", 0)] != subsets[("1", "2", 1)]
    # the separable block and the concatenation beat the noisy block
    acc = {lay: np.mean([d["accuracy"] for d in lines if d["layer"] == lay]) for lay in ("0", "2", "concat:1,2")}
    assert acc["2"] > acc["0"] + 0.3 and acc["concat:1,2"] > acc["0"] + 0.3


def test_logreg_clean_choice_is_the_best_validation_accuracy(fs: FeatureSet, tmp_path: Path) -> None:
    grid = [0.001, 0.1, 10.0]
    cfg = _cfg(fs, splits=_source(fs, ("1",)), layers=[(1,)], heads=["logreg"], scores=["msp"], shots=[None],
               seeds=1, grid={"C": grid})
    run_study(fs, cfg, tmp_path, progress=False)
    (line,) = read_results(tmp_path)
    rows = cfg.splits.rows("1", 0)
    X, Xv = fs.block(1, rows.train), fs.block(1, rows.val)
    heads = [LogisticProbe(C=c).fit(X, rows.y_train) for c in grid]
    keys = [(np.mean(h.predict(Xv) == rows.y_val), -P.log_loss(h.predict_proba(Xv), h.classes_, rows.y_val))
            for h in heads]
    assert line["hparams"] == {"C": grid[P.best_index(keys)]}
    assert line["selection"]["val_accuracy"] == pytest.approx(keys[P.best_index(keys)][0])
    assert line["config"]["path"] == {"param": "C", "n": 3, "min": 0.001, "max": 10.0,
                                      "sha": line["config"]["path"]["sha"]}


def test_paper_protocol_picks_the_best_validation_auroc(fs: FeatureSet, tmp_path: Path) -> None:
    """Issue 11: the paper protocol fits on classes balanced by cycling and selects on auroc_paper (the
    paper's AUROC), recording both; the standard AUROC of the chosen value is kept beside it."""
    cfg = _cfg(fs, splits=_source(fs, ("1",)), layers=[(1,)], scores=["msp"], shots=[None], seeds=1,
               protocol="paper", grid={"temperature": [0.01, 0.1, 1.0, 10.0]})
    run_study(fs, cfg, tmp_path, progress=False)
    (line,) = read_results(tmp_path)
    rows = cfg.splits.rows("1", 0)
    cycled = P.balance_by_cycling(rows.y_train)
    X, Xv, Xu = (fs.block(1, r) for r in (rows.train[cycled], rows.val, rows.val_unknown))
    aurocs, paper_aurocs = [], []
    for t in [0.01, 0.1, 1.0, 10.0]:
        h = CentroidHead(temperature=t).fit(X, rows.y_train[cycled])
        s = SCORERS["msp"](head=h)
        aurocs.append(auroc(s.score_samples(Xv), s.score_samples(Xu)))
        paper_aurocs.append(auroc_paper(s.score_samples(Xv), s.score_samples(Xu)))
    best = int(np.argmax(paper_aurocs))
    assert line["protocol"] == "paper" and line["selection"]["criterion"] == "val_auroc_paper_unknown"
    assert line["selection"]["val_auroc_paper"] == pytest.approx(max(paper_aurocs))
    assert line["selection"]["val_auroc"] == pytest.approx(aurocs[best])
    assert line["hparams"]["temperature"] == [0.01, 0.1, 1.0, 10.0][best]
    # the failed decodes left the classes unequal: the smaller ones were cycled up to the largest
    per_class = line["n"]["train_per_class"]
    assert len(set(per_class.values())) > 1 and line["config"]["balance"] == "cycle"
    assert line["n"]["train"] == sum(per_class.values()) and line["n"]["train_fitted"] == 5 * max(per_class.values())


def test_balance_by_cycling_repeats_each_class_modulo_its_size() -> None:
    y = np.array([2, 0, 2, 1, 0, 2, 2, 2])  # class 0: rows 1, 4; class 1: row 3; class 2: rows 0, 2, 5, 6, 7
    pos = P.balance_by_cycling(y)
    assert pos.tolist() == [1, 4, 1, 4, 1, 3, 3, 3, 3, 3, 0, 2, 5, 6, 7]
    assert np.bincount(y[pos]).tolist() == [5, 5, 5]
    assert P.training_positions(y, "clean").tolist() == list(range(8))  # the clean protocol fits rows as they are
    assert P.training_positions(y, "paper").tolist() == pos.tolist()
    assert P.balance_by_cycling(np.array([1, 0])).tolist() == [1, 0] and len(P.balance_by_cycling(np.array([]))) == 0


# ------------------------------------------------------------------------------------ selection rules
def _cand(value, acc, loss):
    return P.Candidate(value, CentroidHead(temperature=value), acc, loss)


def test_clean_rule_breaks_accuracy_ties_by_log_loss_then_order() -> None:
    sel = P.select_clean([_cand(1, 0.9, 0.5), _cand(2, 0.95, 0.7), _cand(3, 0.95, 0.3), _cand(4, 0.95, 0.3)],
                         "temperature")
    assert sel.value == 3 and sel.index == 2 and sel.hparams == {"temperature": 3}
    assert not sel.summary()["at_grid_edge"]
    nan_first = P.select_clean([_cand(1, float("nan"), 0.1), _cand(2, 0.5, 0.9)], "temperature")
    assert nan_first.value == 2


def test_paper_rule_falls_back_to_clean_for_head_independent_scores() -> None:
    cands = [_cand(1, 0.8, 0.9), _cand(2, 0.9, 0.4), _cand(3, 0.9, 0.2)]

    class Constant:
        def score_samples(self, X):
            return np.asarray(X)[:, 0]

    sel = P.select_paper(cands, "temperature", lambda head: Constant(), np.array([[2.0], [3.0]]),
                         np.array([[1.0]]))
    assert sel.value == 3 and sel.val["val_auroc"] == 1.0  # every AUROC ties: accuracy, then log-loss
    with pytest.raises(P.SelectionError, match="unknown generators"):
        P.select_paper(cands, "temperature", lambda head: Constant(), np.zeros((2, 1)), np.zeros((0, 1)))


def test_paper_rule_fits_and_measures_a_head_independent_score_once() -> None:
    cands = [_cand(1, 0.8, 0.9), _cand(2, 0.9, 0.4), _cand(3, 0.9, 0.2)]
    asked = []

    class HeadFree:
        needs_head = False

        def score_samples(self, X):
            return np.asarray(X)[:, 0]

    def score(head):
        asked.append(head)
        return HeadFree()

    sel = P.select_paper(cands, "temperature", score, np.array([[2.0], [3.0]]), np.array([[1.0]]))
    assert asked == [cands[0].head]
    assert sel.value == 3 and sel.val["val_auroc"] == 1.0


def test_a_study_fits_a_head_independent_score_once_per_job(fs: FeatureSet, tmp_path: Path,
                                                            monkeypatch) -> None:
    fits = []

    class CountedNCM(SCORERS["ncm"]):
        def fit(self, X, y=None):
            fits.append(len(X))
            return super().fit(X, y)

    monkeypatch.setitem(SCORERS, "ncm_counted", CountedNCM)
    cfg = _cfg(fs, splits=_source(fs, ("1",)), layers=[(1,)], heads=["centroid", "ncm"],
               scores=["ncm_counted", "ncm"], shots=[None], seeds=1, protocol="paper",
               grid={"temperature": [0.1, 1.0, 10.0]})
    run = run_study(fs, cfg, tmp_path, progress=False)
    lines = {(d["head"], d["score"]): d for d in read_results(tmp_path)}
    assert run.written == 4 and len(fits) == 1  # one job: one fit for two heads and a 3-value path
    for head in ("centroid", "ncm"):  # the shared fit scores exactly like the built-in one fitted per head
        counted, plain = lines[(head, "ncm_counted")], lines[(head, "ncm")]
        assert counted["hparams"] == plain["hparams"]
        assert all(counted[m] == plain[m] for m in ("auroc", "oscr", "fpr95"))


# ---------------------------------------------------------------------------------------- resume
SLOW_SCRIPT = """
import os, sys, time
sys.path.insert(0, {tests!r})
from synthetic_features import CentroidHead, MaxLogitScore
from attrib.probe.heads import HEADS
from attrib.probe.scorers import SCORERS
from attrib.store import FeatureSet
import test_study as T

class Slow(MaxLogitScore):
    def score_samples(self, X):
        time.sleep(float(os.environ.get("SLOW_SECONDS", "0")))
        return super().score_samples(X)

HEADS["centroid"] = CentroidHead
SCORERS["slow"] = Slow
fs = FeatureSet.open({fs!r})
T.run_study(fs, T._cfg(fs, scores=["slow", "msp"], shots=[None], seeds=1), {out!r}, progress=False)
"""


def test_resume_after_a_real_kill(fs: FeatureSet, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    script = tmp_path / "study.py"
    script.write_text(SLOW_SCRIPT.format(tests=str(TESTS), fs=str(fs.path), out=str(out)))
    # the tests and this checkout's attrib (not another copy installed in the environment)
    # its feature cache (left behind by SIGKILL, by design) goes to this test's folder, not /tmp
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "SLOW_SECONDS": "0.15", "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)]),
           "TMPDIR": str(tmp_path / "tmp")}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stderr=subprocess.PIPE)
    results = out / "results.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if results.exists() and results.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.005)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = results.read_bytes()
    total = 2 * 3 * 2  # splits x layers x scores
    assert 3 <= before.count(b"\n") < total  # it really was interrupted mid-way

    class Slow(MaxLogitScore):
        pass

    monkeypatch.setitem(SCORERS, "slow", Slow)
    cfg = _cfg(fs, scores=["slow", "msp"], shots=[None], seeds=1)
    run = run_study(fs, cfg, out, progress=False)
    after = results.read_bytes()
    kept = before[: before.rfind(b"\n") + 1]
    assert after.startswith(kept)  # finished lines are kept as they were, never redone
    assert run.skipped_done == kept.count(b"\n") and run.written == total - kept.count(b"\n")
    reference = run_study(fs, cfg, tmp_path / "ref", progress=False)
    assert reference.written == total
    assert _strip(read_results(out)) == _strip(read_results(tmp_path / "ref"))


def test_resume_after_a_torn_line(fs: FeatureSet, tmp_path: Path) -> None:
    cfg = _cfg(fs, layers=[(2,)], shots=[None], seeds=1)
    run_study(fs, cfg, tmp_path, progress=False)
    path = tmp_path / "results.jsonl"
    full = path.read_bytes()
    cut = full.rfind(b"\n", 0, len(full) - 1) + 40  # 40 bytes into the last line
    path.write_bytes(full[:cut])
    assert len(read_results(tmp_path)) == full.count(b"\n") - 1  # `attrib report` ignores the torn line
    logs: list[str] = []
    run = run_study(fs, cfg, tmp_path, progress=False, log=logs.append)
    assert run.written == 1 and any("torn last line" in m for m in logs)
    assert _strip(read_results(tmp_path)) == _strip([json.loads(x) for x in full.splitlines()])
    # a damaged line that is not the last is an error naming it
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:1] + [b"{oops\n"] + lines[1:]))
    with pytest.raises(StudyError, match=r"results.jsonl:2: not a result line"):
        read_results(tmp_path)


def test_refuses_to_mix_incompatible_results(fs: FeatureSet, tmp_path: Path) -> None:
    cfg = _cfg(fs, layers=[(2,)], scores=["msp"], shots=[None], seeds=1)
    run_study(fs, cfg, tmp_path, progress=False)
    with pytest.raises(StudyError, match="other rows"):
        run_study(fs, _cfg(fs, splits=_source(fs, train_per_class=10), layers=[(2,)], scores=["msp"],
                           shots=[None], seeds=1), tmp_path, progress=False)
    with pytest.raises(StudyError, match="another temperature grid"):
        run_study(fs, _cfg(fs, layers=[(2,)], scores=["msp"], shots=[None], seeds=1,
                           grid={"temperature": [1.0]}), tmp_path, progress=False)
    other = make_feature_set(tmp_path / "other", seed=1)
    with pytest.raises(StudyError, match="feature set"):
        run_study(other, _cfg(other, layers=[(2,)], scores=["msp"], shots=[None], seeds=1), tmp_path,
                  progress=False)
    # more layers, shots or protocols can be added to the same folder
    more = run_study(fs, _cfg(fs, layers=[(2,), (1,)], scores=["msp"], shots=[None], seeds=1,
                              protocol="paper"), tmp_path, progress=False)
    assert more.written == 2 * 2 * 1 and more.skipped_done == 0


def test_a_failing_score_is_reported_and_retried(fs: FeatureSet, tmp_path: Path, monkeypatch) -> None:
    class Boom(MaxLogitScore):
        def score_samples(self, X):
            raise FloatingPointError("singular covariance")

    monkeypatch.setitem(SCORERS, "boom", Boom)
    cfg = _cfg(fs, layers=[(2,)], scores=["msp", "boom"], shots=[None], seeds=1)
    run = run_study(fs, cfg, tmp_path, progress=False)
    assert run.written == 2 and len(run.errors) == 2 and "singular covariance" in run.errors[0]
    monkeypatch.setitem(SCORERS, "boom", MaxLogitScore)
    assert run_study(fs, cfg, tmp_path, progress=False).written == 2


def test_each_line_is_on_disk_before_the_next_is_computed(fs: FeatureSet, tmp_path: Path,
                                                          monkeypatch) -> None:
    """With --jobs 1, a kill in the middle of a job loses no finished (head, score) line of it."""
    results = tmp_path / "results.jsonl"
    seen: list[int] = []

    class Peek(MaxLogitScore):
        def score_samples(self, X):
            seen.append(results.read_bytes().count(b"\n") if results.exists() else 0)
            return super().score_samples(X)

    monkeypatch.setitem(SCORERS, "peek", Peek)
    cfg = _cfg(fs, splits=_source(fs, splits=("1",)), layers=[(2,)], heads=["centroid", "logreg"],
               scores=["msp", "peek"], shots=[None], seeds=1, grid={"C": [1.0]})
    run = run_study(fs, cfg, tmp_path, progress=False)
    assert run.written == 4 and not run.errors  # one job: (centroid, logreg) x (msp, peek)
    # peek scores known then unknown test images, after 1 line (centroid+msp), then after 3 lines
    assert seen == [1, 1, 3, 3]


# --------------------------------------------------------------------------------------- parallel
def test_parallel_jobs_give_identical_results(fs: FeatureSet, tmp_path: Path) -> None:
    cfg = dict(layers=[(1,), (2,)], heads=["logreg", "centroid"], scores=["msp", "maxlogit_t"], shots=[3],
               seeds=1, grid={"C": [0.1, 1.0]})
    one = run_study(fs, _cfg(fs, jobs=1, **cfg), tmp_path / "one", progress=False)
    two = run_study(fs, _cfg(fs, jobs=2, **cfg), tmp_path / "two", progress=False)
    assert one.written == two.written == 2 * 2 * 2 * 2
    assert _strip(read_results(tmp_path / "one")) == _strip(read_results(tmp_path / "two"))


def test_one_writer_per_folder_and_no_duplicate_lines(fs: FeatureSet, tmp_path: Path) -> None:
    import fcntl

    cfg = _cfg(fs, layers=[(2,), (2,)], scores=["msp", "msp"], shots=[2, 2, None], seeds=1)
    run = run_study(fs, cfg, tmp_path, progress=False)
    assert run.written == 2 * 1 * 1 * 2 == len({line_key(d) for d in read_results(tmp_path)})
    with open(tmp_path / ".lock", "w") as held:  # as a second `attrib probe` still running would
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(StudyError, match="another `attrib probe` is writing"):
            run_study(fs, _cfg(fs, layers=[(1,)], scores=["msp"], shots=[None], seeds=1), tmp_path,
                      progress=False)


def _start_slow_study(fs: FeatureSet, tmp_path: Path, lines: int = 3) -> tuple[subprocess.Popen, Path, Path]:
    """A study in another process, its feature cache under tmp_path/tmp, once it has written ``lines``."""
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    script = tmp_path / "study.py"
    script.write_text(SLOW_SCRIPT.format(tests=str(TESTS), fs=str(fs.path), out=str(out)))
    env = {**os.environ, "SLOW_SECONDS": "0.15", "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)]),
           "TMPDIR": str(tmp)}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stderr=subprocess.PIPE)
    results = out / "results.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if results.exists() and results.read_bytes().count(b"\n") >= lines:
            break
        time.sleep(0.005)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    return proc, out, tmp


def test_sigterm_removes_the_feature_cache(fs: FeatureSet, tmp_path: Path) -> None:
    """`timeout`, `scancel` and `kill` send SIGTERM: the study's block arrays (GBs on GenImage) must go."""
    proc, out, tmp = _start_slow_study(fs, tmp_path)
    assert list(tmp.glob("attrib-features-*"))  # it was there while the study ran
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert not list(tmp.glob("attrib-features-*"))
    assert read_results(out)  # the lines written before the signal are kept


def test_a_study_removes_caches_left_by_dead_processes(fs: FeatureSet, tmp_path: Path, monkeypatch) -> None:
    proc, _, tmp = _start_slow_study(fs, tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = list(tmp.glob("attrib-features-*"))
    assert len(left) == 1  # SIGKILL cannot be caught: the folder stays ...
    other_host = tmp / "attrib-features-some-other-host-1-abc"
    other_host.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    run_study(fs, _cfg(fs, layers=[(2,)], shots=[None], seeds=1), tmp_path / "next", progress=False)
    assert not left[0].exists()  # ... until the next study on this host removes it
    assert other_host.exists()  # another host's (a shared scratch folder) is not ours to judge
    assert [p.name for p in tmp.iterdir()] == [other_host.name]


@pytest.mark.slow
def test_dask_backend_gives_the_lines_of_jobs_1(fs: FeatureSet, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    cfg = _cfg(fs, scores=["msp", "maxlogit_t"], shots=[None])
    run_study(fs, cfg, tmp_path / "one", progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  worker_class=distributed.Nanny) as cluster:
        with distributed.Client(cluster) as client:
            client.run(_register_on_worker, str(TESTS))
        cfg_dask = _cfg(fs, scores=["msp", "maxlogit_t"], shots=[None], backend="dask",
                        scheduler=cluster.scheduler_address, scratch=str(tmp_path / "scratch"))
        run = run_study(fs, cfg_dask, tmp_path / "dask", progress=False)
    assert run.written == len(read_results(tmp_path / "one")) and not run.errors
    assert _strip(read_results(tmp_path / "dask")) == _strip(read_results(tmp_path / "one"))
    assert not list((tmp_path / "scratch").iterdir())  # the shared scratch folder is cleaned


def _register_on_worker(tests: str) -> None:
    """Jobs carry their head and score classes, pickled by reference: make the tests' module importable."""
    sys.path.insert(0, tests)
    import synthetic_features  # noqa: F401


def test_backend_options_are_checked(fs: FeatureSet) -> None:
    with pytest.raises(StudyError, match="--backend dask needs --scheduler"):
        _cfg(fs, backend="dask").validate()
    with pytest.raises(StudyError, match="--backend 'ray'"):
        _cfg(fs, backend="ray").validate()


def test_an_error_while_the_workers_warm_up_is_the_one_reported(fs: FeatureSet) -> None:
    """The workers import torch while the features are read; a failure there must not be hidden behind
    (or wait on) the warm-up."""
    from attrib.probe.study import _workers

    with pytest.raises(ZeroDivisionError):
        with _workers(_cfg(fs, jobs=2), 2) as workers:
            assert workers is not None
            raise ZeroDivisionError("the feature set could not be read")
    with _workers(_cfg(fs, jobs=1), 2) as workers:
        assert workers is None  # --jobs 1: the jobs run in this process, lines written as they come


@pytest.mark.parametrize("protocol, screened", [("clean", True), ("paper", False)])
def test_only_a_choice_by_validation_accuracy_lets_logreg_screen_its_path(fs: FeatureSet, tmp_path: Path, monkeypatch,
                                                                          protocol: str, screened: bool) -> None:
    """The clean protocol chooses C by validation accuracy, so the solver may stop the C that cannot win
    early; the paper protocol chooses by each head's AUROC, so every C must be solved to tol."""
    given = []
    real = LogisticProbe._screen

    def spy(self, validation, *args):
        given.append(validation is not None)
        return real(self, validation, *args)

    monkeypatch.setattr(LogisticProbe, "_screen", spy)
    cfg = _cfg(fs, splits=_source(fs, ("1",)), layers=[(1,)], heads=["logreg"], scores=["msp"], shots=[None],
               seeds=1, grid={"C": [0.001, 0.1, 10.0]}, protocol=protocol)
    run = run_study(fs, cfg, tmp_path, progress=False)
    assert run.written == 1 and not run.errors and given == [screened]
    if protocol == "clean":  # --save-head chooses by validation accuracy too
        from attrib.probe.choose import save_chosen_head
        from attrib.probe.persist import load_head

        given.clear()
        save_chosen_head(fs, cfg, tmp_path / "head", log=lambda _: None)
        assert given == [True] and load_head(tmp_path / "head").head.solved_tol_ == 1e-6
