"""Saved heads: exact round trips, clear failures on tampered or unsafe files, and `--save-head`."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from attrib.cli import main
from attrib.data.sampling import SampledSplits
from attrib.data.splits import builtin_splits
from attrib.probe.heads import LogisticProbe
from attrib.output_paths import make_folder
from attrib.probe.persist import UNKNOWN, HeadFileError, load_head, save_head
from attrib.probe.scorers import SCORERS
from attrib.probe.choose import check_save_head
from attrib.probe.options import StudyError
from attrib.probe.results import read_results
from attrib.probe.study import StudyConfig, shots_subset
from attrib.store import FeatureSet

from synthetic_features import CentroidDistance, CentroidHead, make_feature_set, register


@pytest.fixture(autouse=True)
def _registered(monkeypatch):
    register(monkeypatch)


@pytest.fixture(scope="module")
def fs(tmp_path_factory) -> FeatureSet:
    return make_feature_set(tmp_path_factory.mktemp("persist"))


def _data(seed=0, n=60, d=6, k=3):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n // k)
    X = rng.normal(size=(n, d)) + 2 * rng.normal(size=(k, d))[y]
    return X.astype(np.float32), y


def _save(folder: Path, head, scorer, head_name: str, score_name: str, X) -> Path:
    return save_head(folder, head, scorer, head_name=head_name, score_name=score_name,
                     classes=["real", "genA", "genB"], layer=(7,), threshold=0.6, feature_set="fs-x",
                     manifest={"model": "m", "weights": "w", "label": "random-init: test"}, check_X=X[:5],
                     info={"hparams": {"C": 0.5}})


def _assert_same(saved, head, scorer, X) -> None:
    np.testing.assert_array_equal(saved.predict_proba(X), head.predict_proba(X))
    np.testing.assert_array_equal(saved.score_samples(X), scorer.score_samples(X))
    names = np.array(["real", "genA", "genB"], dtype=object)
    np.testing.assert_array_equal(saved.predict(X), names[head.predict(X)])
    s = scorer.score_samples(X)
    np.testing.assert_array_equal(saved.decide(X), np.where(s >= 0.6, names[head.predict(X)], UNKNOWN))


@pytest.mark.parametrize("which", ["logreg+msp", "centroid+centroid_dist"])
def test_round_trip_gives_identical_outputs(tmp_path: Path, which: str) -> None:
    X, y = _data()
    if which == "logreg+msp":
        head = LogisticProbe(C=0.5).fit(X, y)
        scorer = SCORERS["msp"](head=head).fit(X, y)
    else:  # a registry entry added at run time, with dict / list / numpy-scalar state
        head = CentroidHead(temperature=0.3, note="n").fit(X, y)
        scorer = CentroidDistance(head=head).fit(X, y)
    h, s = which.split("+")
    saved = load_head(_save(tmp_path, head, scorer, h, s, X))
    _assert_same(saved, head, scorer, X)
    assert saved.classes == ("real", "genA", "genB") and saved.layer == (7,) and saved.threshold == 0.6
    assert saved.label == "random-init: test" and saved.info["hparams"] == {"C": 0.5}
    assert type(saved.head) is type(head) and saved.head.get_params() == head.get_params()
    names, probs = saved.top_k(X, k=2)
    assert names.shape == probs.shape == (len(X), 2) and np.all(probs[:, 0] >= probs[:, 1])
    out = saved.outputs(X, k=3, threshold=-np.inf)
    assert (out["decision"] == out["prediction"]).all() and out["top_sources"].shape == (len(X), 3)
    with pytest.raises(HeadFileError, match=r"shape \(n, 6\)"):
        saved.predict(X[:, :4])
    with np.load(tmp_path / "head.npz", allow_pickle=False) as z:  # plain arrays, nothing pickled
        assert all(z[k].dtype != object for k in z.files)


def test_a_head_fitted_on_a_gpu_loads_and_predicts_on_a_machine_without_one(tmp_path: Path) -> None:
    """``--param logreg.device=cuda`` is saved with the head's parameters; the head itself is numpy, so
    loading it elsewhere must not need (or check for) that device."""
    X, y = _data()
    head = LogisticProbe(C=0.5).fit(X, y).set_params(device="cuda")   # as if fitted on a GPU machine
    scorer = SCORERS["msp"](head=head).fit(X, y)
    saved = load_head(_save(tmp_path, head, scorer, "logreg", "msp", X))
    assert saved.head.get_params()["device"] == "cuda"
    _assert_same(saved, head, scorer, X)


def _rewrite_npz(path: Path, change) -> None:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    np.savez(path, **arrays)


def _reseal(folder: Path) -> None:
    """What someone (or a newer attrib) would need to do for the checksums to pass again."""
    import hashlib

    from attrib.probe.persist import _canonical

    doc = json.loads((folder / "head.json").read_text())
    doc["npz_sha256"] = hashlib.sha256((folder / "head.npz").read_bytes()).hexdigest()
    doc.pop("json_sha256")
    doc["json_sha256"] = hashlib.sha256(_canonical(doc)).hexdigest()
    (folder / "head.json").write_text(json.dumps(doc))


def test_tampered_files_fail_clearly(tmp_path: Path) -> None:
    X, y = _data()
    head = LogisticProbe(C=0.5).fit(X, y)
    scorer = SCORERS["msp"](head=head)
    folder = _save(tmp_path / "h", head, scorer, "logreg", "msp", X)
    good_json, good_npz = (folder / "head.json").read_bytes(), (folder / "head.npz").read_bytes()

    _rewrite_npz(folder / "head.npz", lambda a: a.__setitem__("head.state.coef_", a["head.state.coef_"] * 1.01))
    with pytest.raises(HeadFileError, match="head.npz does not match the checksum"):
        load_head(folder)

    _reseal(folder)  # checksums made consistent: the stored outputs still catch the changed weights
    with pytest.raises(HeadFileError, match="does not reproduce the outputs"):
        load_head(folder)

    (folder / "head.npz").write_bytes(good_npz)
    (folder / "head.json").write_text(good_json.decode().replace('"threshold": 0.6', '"threshold": 0.1'))
    with pytest.raises(HeadFileError, match="head.json does not match its checksum"):
        load_head(folder)

    (folder / "head.json").write_text(good_json.decode().replace('"name": "logreg"', '"name": "svm"'))
    _reseal(folder)
    with pytest.raises(HeadFileError, match="'svm' is not available"):
        load_head(folder)

    (folder / "head.json").write_bytes(good_json)
    buf = io.BytesIO()  # an object (pickle) array smuggled into the npz is refused, never unpickled
    with zipfile.ZipFile(folder / "head.npz") as zin, zipfile.ZipFile(buf, "w") as zout:
        for item in zin.namelist():
            zout.writestr(item, zin.read(item))
        arr = io.BytesIO()
        np.save(arr, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
        zout.writestr("extra.npy", arr.getvalue())
    (folder / "head.npz").write_bytes(buf.getvalue())
    _reseal(folder)
    with pytest.raises(HeadFileError, match="unreadable"):
        load_head(folder)

    (folder / "head.npz").unlink()
    with pytest.raises(HeadFileError, match="head.npz is missing"):
        load_head(folder)
    (folder / "head.json").write_text("{not json")
    (folder / "head.npz").write_bytes(good_npz)
    with pytest.raises(HeadFileError, match="not valid JSON"):
        load_head(folder)


def test_state_that_needs_pickle_is_refused(tmp_path: Path) -> None:
    X, y = _data()
    head = CentroidHead().fit(X, y)
    scorer = CentroidDistance(head=head).fit(X, y)
    scorer.index_ = object()
    with pytest.raises(HeadFileError, match="scorer.state.index_: a object cannot be saved without pickle"):
        _save(tmp_path, head, scorer, "centroid", "centroid_dist", X)
    with pytest.raises(HeadFileError, match="not registered as 'msp'"):
        _save(tmp_path, head, CentroidDistance(head=head).fit(X, y), "centroid", "msp", X)
    assert not (tmp_path / "head.json").exists()


# ----------------------------------------------------------------------------------- --save-head
def _cli(args: list[str]) -> str:
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def test_save_head_chooses_on_validation_and_matches_the_study(fs: FeatureSet, tmp_path: Path) -> None:
    out = _cli(["probe", "--features", str(fs.path), "--splits", "1", "--layers", "0;2", "--heads",
                "centroid,logreg", "--scores", "msp,maxlogit_t", "--grid", "C=0.1,1", "--save-head",
                str(tmp_path / "head"), "--out", str(tmp_path / "r"), "--quiet"])
    assert "saved head:" in out and "pseudo_open_set_oscr" in out
    saved = load_head(tmp_path / "head")
    info = saved.info
    cands = info["choice"]["candidates"]
    assert info["protocol"] == "clean" and info["choice"]["criterion"] == "pseudo_open_set_oscr"
    assert len(cands) == 2 * 2 * 2 and info["choice"]["pseudo_unknown"] == ["deconv", "spectral", "perlin", "palette"]
    best = max(cands, key=lambda c: c["pseudo_oscr"])
    assert ",".join(map(str, saved.layer)) == best["layer"] == "2"
    assert (saved.head_name, saved.score_name) == (best["head"], best["score"])
    assert saved.manifest == fs.manifest and saved.feature_set == fs.id
    assert saved.classes == builtin_splits("demo")["1"].classes

    ok, _ = fs.status()
    rows = SampledSplits(fs.images, ok, builtin_splits("demo")).rows("1", 0)
    X_val = saved.features(fs, rows.val)
    accepted = np.mean(saved.decide(X_val) != UNKNOWN)
    assert accepted >= 0.95 and accepted == pytest.approx(info["validation"]["tpr"])
    # the saved head is the study's head for the same method: same test accuracy to the last digit
    line = next(d for d in read_results(tmp_path / "r") if (d["layer"], d["head"], d["score"]) ==
                (best["layer"], best["head"], best["score"]))
    assert line["hparams"] == info["hparams"]
    pred = saved.predict(saved.features(fs, rows.test))
    assert np.mean(pred == np.array(saved.classes, dtype=object)[rows.y_test]) == line["accuracy"]
    assert len(rows.train[shots_subset(rows.y_train, None, 0)]) == info["n_train"]


def test_save_head_with_one_candidate_and_its_errors(fs: FeatureSet, tmp_path: Path) -> None:
    _cli(["probe", "--features", str(fs.path), "--splits", "2", "--layers", "1", "--heads", "centroid",
          "--scores", "maxlogit_t", "--shots", "5,10", "--save-head", str(tmp_path / "h"), "--out",
          str(tmp_path / "r"), "--quiet"])
    saved = load_head(tmp_path / "h")
    assert saved.info["choice"]["criterion"] == "given" and saved.info["shots"] == "10"
    assert saved.layer == (1,) and saved.info["validation"]["n_unknown"] > 0
    other = fs.manifest.replace(model="ViT-B-16")
    assert saved.extraction_mismatch(other) == [
        "model: head was trained on 'synthetic', these features have 'ViT-B-16'"]
    res = CliRunner().invoke(main, ["probe", "--features", str(fs.path), "--splits", "1,2", "--save-head",
                                    str(tmp_path / "h2"), "--out", str(tmp_path / "r2")])
    assert res.exit_code == 2 and "name it with --splits" in res.output
    assert not (tmp_path / "r2" / "results.jsonl").exists()  # refused before running the study


def test_a_head_folder_that_cannot_be_written_is_refused(fs: FeatureSet, tmp_path: Path, monkeypatch) -> None:
    X, y = _data()
    head = LogisticProbe(C=1.0).fit(X, y)
    (tmp_path / "file").write_text("x")
    under = tmp_path / "file" / "head"
    with pytest.raises(HeadFileError, match=r"^--save-head .*file/head: .*file is a file, so nothing can be"):
        _save(under, head, SCORERS["msp"](head=head), "logreg", "msp", X)
    # what `attrib probe --save-head` checks before the study: one split and a folder it can write
    ok, _ = fs.status()
    one = StudyConfig(splits=SampledSplits(fs.images, ok, {"1": builtin_splits("demo")["1"]}), layers=[(1,)])
    with pytest.raises(HeadFileError, match="is a file; give a folder"):
        check_save_head(one, tmp_path / "file")
    with pytest.raises(HeadFileError, match="so nothing can be created under it"):
        check_save_head(one, under)
    check_save_head(one, tmp_path / "new" / "head")
    assert not (tmp_path / "new").exists()  # checking creates nothing
    two = StudyConfig(splits=SampledSplits(fs.images, ok, builtin_splits("demo")), layers=[(1,)])
    with pytest.raises(StudyError, match="name it with --splits"):
        check_save_head(two, tmp_path / "new")

    def read_only(self, *args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(Path, "mkdir", read_only)  # a failure no check can foresee
    with pytest.raises(HeadFileError, match=r"cannot create this folder \(Read-only file system\)"):
        make_folder(tmp_path / "ro", "--save-head", HeadFileError)


def test_an_existing_head_is_replaced_only_with_force(fs: FeatureSet, tmp_path: Path) -> None:
    X, y = _data()
    head = LogisticProbe(C=1.0).fit(X, y)
    folder = _save(tmp_path / "h", head, SCORERS["msp"](head=head), "logreg", "msp", X)
    before = (folder / "head.json").read_bytes()
    other = LogisticProbe(C=0.01).fit(X, y)
    with pytest.raises(HeadFileError, match=r"already holds a saved head \(head.json\); .* add --force"):
        _save(folder, other, SCORERS["msp"](head=other), "logreg", "msp", X)
    assert (folder / "head.json").read_bytes() == before  # nothing was touched
    save_head(folder, other, SCORERS["msp"](head=other), head_name="logreg", score_name="msp",
              classes=["real", "genA", "genB"], layer=(7,), threshold=0.6, feature_set="fs-x",
              manifest={"model": "m", "weights": "w"}, check_X=X[:5], force=True)
    assert load_head(folder).head.C == 0.01
    # the command line refuses before the study, and --force lets it through
    args = ["probe", "--features", str(fs.path), "--splits", "1", "--layers", "2", "--heads", "centroid",
            "--scores", "msp", "--save-head", str(folder), "--out", str(tmp_path / "r"), "--quiet"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and "already holds a saved head" in res.output
    assert not (tmp_path / "r").exists()  # refused before any work
    _cli([*args, "--force"])
    assert load_head(folder).head_name == "centroid"
