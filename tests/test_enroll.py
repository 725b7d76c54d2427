"""`attrib enroll`: a saved head learns a generator it did not know from a few of its images.

On the demo with the tiny random-init checkpoint: split 1 knows real + deconv, spectral, perlin, palette;
upconv is one of its unknown generators, and is the one enrolled here.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from attrib import choices
from attrib.cli import main
from attrib.data.sampling import SampledSplits
from attrib.data.splits import builtin_splits
from attrib.probe.enroll import DEFAULT_HOLDOUT, EnrollError, enroll_features, holdout_rows, needs_training
from attrib.probe.persist import HeadFileError, load_head, load_training, save_head, saved_info
from attrib.store import FeatureSet

NEW = "upconv"


def _run(args: list[str], ok: bool = True):
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    if ok:
        assert res.exit_code == 0, res.output
    return res


@pytest.fixture(scope="module")
def demo(demo_root: Path, tiny_checkpoint: Path, tmp_path_factory) -> dict:
    """Demo features (tiny checkpoint) and two heads saved on split 1: logreg + msp and knn + knn."""
    tmp = tmp_path_factory.mktemp("enroll")
    out = _run(["features", "--dataset", "demo", "--root", str(demo_root), "--model", "attrib-tiny",
                "--pretrained", str(tiny_checkpoint), "--cache", str(tmp / "cache"), "--workers", "0",
                "--quiet"]).output
    fs = FeatureSet.open(out.strip().splitlines()[-1])
    heads = {}
    for head, score, grid in (("logreg", "msp", "C=0.1,1,10"), ("knn", "knn", "k=1,3,5")):
        heads[head] = tmp / f"head-{head}"
        _run(["probe", "--features", str(fs.path), "--splits", "1", "--layers", "3", "--heads", head, "--scores",
              score, "--grid", grid, "--save-head", str(heads[head]), "--out", str(tmp / f"results-{head}"), "--quiet"])
    ok, _ = fs.status()
    rows = SampledSplits(fs.images, ok, builtin_splits("demo")).rows("1", 0)
    sources = np.asarray(fs.images.sources, dtype=object)
    subsets = np.asarray(fs.images.subsets, dtype=object)
    return {"tmp": tmp, "fs": fs, "heads": heads, "rows": rows, "sources": sources, "subsets": subsets}


def _abspath(fs: FeatureSet, r: int) -> str:
    return str(Path(fs.images.root) / fs.images.paths[r])


def _new_rows(demo: dict, subset: str) -> np.ndarray:
    return np.flatnonzero((demo["sources"] == NEW) & (demo["subsets"] == subset))


def test_enrolled_logreg_head_knows_the_new_source_and_keeps_the_old(demo: dict, tmp_path: Path) -> None:
    fs, rows = demo["fs"], demo["rows"]
    old = load_head(demo["heads"]["logreg"])
    assert old.info["training"]["arrays"]["train.X"]["dtype"] == "float16"  # logreg needs its training features
    assert NEW not in old.classes
    fit = _new_rows(demo, "train")[:6]  # a handful of images: 5 fitted, 1 held out
    listing = tmp_path / "new.txt"
    listing.write_text("\n".join(_abspath(fs, r) for r in fit) + "\n")
    out = tmp_path / "enrolled"
    res = _run(["enroll", "--head", str(demo["heads"]["logreg"]), "--source", NEW, str(listing), "--out", str(out),
                "--cache", str(demo["tmp"] / "cache"), "--workers", "0", "--quiet"])
    assert res.output.strip().splitlines()[-1] == str(out)

    new = load_head(out)  # the self-check of any saved head, after a reload
    assert new.classes == (*old.classes, NEW)
    assert np.asarray(new.head.classes_).tolist()[:-1] == np.asarray(old.head.classes_).tolist()
    rec = new.info["enrolments"][-1]
    assert rec["source"] == NEW and rec["n_images"] == 6 and rec["method"] == "refitted"
    assert sorted(rec["images"]) == sorted(_abspath(fs, r) for r in fit)
    assert len(rec["fit_images"]) == 5 and len(rec["holdout_images"]) == 1 and rec["date"]
    assert rec["threshold"] == new.threshold

    # images of the new generator it never saw (the val folder) are attributed to it, far above chance
    unseen = _new_rows(demo, "val")
    acc_new = np.mean(new.predict(new.features(fs, unseen)) == NEW)
    assert acc_new >= 0.6 > 2 / len(new.classes)
    # the old classes keep their names; their test accuracy stays close to the old head's
    truth = demo["sources"][rows.test]
    before = np.mean(old.predict(old.features(fs, rows.test)) == truth)
    after = np.mean(new.predict(new.features(fs, rows.test)) == truth)
    assert after >= before - 0.15
    # the threshold accepts 95% of the known validation images: the old classes' + the held-out new one
    training = load_training(new)
    s = new.score_samples(training["val.X"])
    assert np.mean(s >= new.threshold) >= 0.95
    assert len(training["val.X"]) == len(load_training(old)["val.X"]) + 1
    assert len(training["train.X"]) == len(load_training(old)["train.X"]) + 5


def test_knn_head_is_extended_and_equals_a_head_fitted_on_old_and_new(demo: dict, tmp_path: Path) -> None:
    fs = demo["fs"]
    old = load_head(demo["heads"]["knn"])
    assert "train.X" not in old.info["training"]["arrays"]  # the bank already holds what extending needs
    fit = _new_rows(demo, "train")
    X = old.features(fs, fit)
    rec = enroll_features(old, NEW, X, tmp_path / "knn", images=[_abspath(fs, r) for r in fit], holdout=0.25)
    new = load_head(tmp_path / "knn")
    assert rec["method"] == "extended" and new.classes[-1] == NEW
    kept, _ = holdout_rows(len(X), 0.25)
    # the same state as a k-NN fitted from scratch on the old bank plus the new images
    y_old = old.head.classes_[old.head.labels_]
    ref = type(old.head)(**old.head.get_params()).fit(np.vstack([old.head.bank_, X[kept]]),
                                                      np.append(y_old, [rec["label"]] * len(kept)))
    np.testing.assert_allclose(new.head.bank_, ref.bank_, atol=1e-6)
    assert (new.head.labels_ == ref.labels_).all() and new.head.k_ == ref.k_
    unseen = _new_rows(demo, "val")
    assert np.mean(new.predict(new.features(fs, unseen)) == NEW) >= 0.6


def _as_old_version(saved, folder: Path) -> Path:
    """The same head saved the way attrib saved heads before enrolment existed: no train.npz."""
    info = saved_info(saved)
    return save_head(folder, saved.head, saved.scorer, head_name=saved.head_name, score_name=saved.score_name,
                     classes=saved.classes, layer=saved.layer, threshold=saved.threshold,
                     feature_set=saved.feature_set, manifest=saved.manifest, check_X=saved.check_X, info=info)
    # (no training= argument: that is how heads were saved before)


def test_heads_saved_before_enrolment_knn_yes_logreg_refused(demo: dict, tmp_path: Path) -> None:
    fs = demo["fs"]
    fit = _new_rows(demo, "train")[:5]
    paths = [_abspath(fs, r) for r in fit]
    knn = load_head(_as_old_version(load_head(demo["heads"]["knn"]), tmp_path / "old-knn"))
    assert load_training(knn) is None
    rec = enroll_features(knn, NEW, knn.features(fs, fit), tmp_path / "new-knn", images=paths)
    assert rec["validation"]["old_classes_from"] == "self-check vectors only"
    assert load_head(tmp_path / "new-knn").classes[-1] == NEW

    logreg = load_head(_as_old_version(load_head(demo["heads"]["logreg"]), tmp_path / "old-logreg"))
    with pytest.raises(EnrollError, match="re-save it with this version"):
        enroll_features(logreg, NEW, logreg.features(fs, fit), tmp_path / "new-logreg", images=paths)
    assert not (tmp_path / "new-logreg").exists()
    res = _run(["enroll", "--head", str(tmp_path / "old-logreg"), "--source", NEW, *paths, "--out",
                str(tmp_path / "x"), "--cache", str(tmp_path / "cache"), "--workers", "0", "--quiet"], ok=False)
    assert res.exit_code == 2 and "re-save it with this version" in res.output
    assert not (tmp_path / "cache").exists()  # refused before extracting anything


def test_refusals(demo: dict, tmp_path: Path) -> None:
    fs = demo["fs"]
    saved = load_head(demo["heads"]["knn"])
    fit = _new_rows(demo, "train")[:5]
    X, paths = saved.features(fs, fit), [_abspath(fs, r) for r in fit]
    with pytest.raises(EnrollError, match="already a class"):
        enroll_features(saved, saved.classes[1], X, tmp_path / "a", images=paths)
    with pytest.raises(EnrollError, match="unknown"):
        enroll_features(saved, "unknown", X, tmp_path / "a", images=paths)
    with pytest.raises(EnrollError, match="too few"):
        enroll_features(saved, NEW, X[:1], tmp_path / "a", images=paths[:1])
    with pytest.raises(EnrollError, match="--holdout"):
        enroll_features(saved, NEW, X, tmp_path / "a", images=paths, holdout=1.0)
    # --out never overwrites a head, not even the one enrolled into, unless --force
    for target in (demo["heads"]["knn"], demo["heads"]["logreg"]):
        with pytest.raises(HeadFileError, match="--out .* already holds a saved head"):
            enroll_features(saved, NEW, X, target, images=paths)
    enroll_features(saved, NEW, X, tmp_path / "b", images=paths)
    before = (tmp_path / "b" / "head.json").read_bytes()
    res = _run(["enroll", "--head", str(demo["heads"]["knn"]), "--source", "other", *paths, "--out",
                str(tmp_path / "b"), "--cache", str(tmp_path / "cache"), "--workers", "0", "--quiet"], ok=False)
    assert res.exit_code == 2 and "--force" in res.output
    assert (tmp_path / "b" / "head.json").read_bytes() == before
    enroll_features(saved, "other", X, tmp_path / "b", images=paths, force=True)
    assert load_head(tmp_path / "b").classes[-1] == "other"


def test_training_file_is_float16_compressed_and_checked(demo: dict, tmp_path: Path) -> None:
    folder = demo["heads"]["logreg"]
    entry = json.loads((folder / "head.json").read_text())["training"]
    data = (folder / "train.npz").read_bytes()
    assert entry["bytes"] == len(data)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in z.infolist())
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        assert z["train.X"].dtype == np.float16 and z["val.X"].dtype == np.float16
        assert z["train.y"].dtype == np.int64
    # a damaged training file is caught by its checksum when an enrolment reads it
    copy = tmp_path / "head"
    copy.mkdir()
    for name in ("head.json", "head.npz"):
        (copy / name).write_bytes((folder / name).read_bytes())
    (copy / "train.npz").write_bytes(data[:-10] + b"0123456789")
    saved = load_head(copy)  # predict never reads it
    with pytest.raises(HeadFileError, match="train.npz does not match the checksum"):
        load_training(saved)


def test_what_needs_training_features_and_the_shown_default() -> None:
    assert needs_training("logreg", "msp") and needs_training("gauss", "msp") and needs_training("knn", "vim")
    assert not needs_training("knn", "knn") and not needs_training("ncm", "ncm") and not needs_training("ncm", "msp")
    assert choices.DEFAULT_HOLDOUT == DEFAULT_HOLDOUT


def _blobs(seed: int, k: int, n: int = 20, d: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n)
    X = rng.normal(size=(k * n, d)) + 4 * rng.normal(size=(k, d))[y]
    return X.astype(np.float32), y


@pytest.mark.parametrize("head_name, score_name", [("logreg", "vim"), ("gauss", "mahalanobis"), ("ncm", "ncm")])
def test_enrolled_head_equals_one_fitted_on_the_stored_and_new_features(tmp_path: Path, head_name: str,
                                                                        score_name: str) -> None:
    """Synthetic blobs: refitted heads are exactly a fit on the float16-stored old + new training features."""
    from attrib.probe.enroll import enrolment_data
    from attrib.probe.heads import HEADS
    from attrib.probe.scorers import SCORERS

    X, y = _blobs(0, 4)
    old, new = y < 3, y == 3
    params = {"dim": 3} if score_name == "vim" else {}
    head = HEADS[head_name]().fit(X[old], y[old])
    scorer = SCORERS[score_name](head=head, **params).fit(X[old], y[old])
    save_head(tmp_path / "h", head, scorer, head_name=head_name, score_name=score_name, classes=["real", "a", "b"],
              layer=(1,), threshold=0.0, feature_set="fs", manifest={"model": "m", "weights": "w"},
              check_X=X[:5], info={"tpr": 0.95},
              training=enrolment_data(head_name, score_name, X[old], y[old], X[old][::2], y[old][::2]))
    saved = load_head(tmp_path / "h")
    rec = enroll_features(saved, "c", X[new], tmp_path / "e", images=[f"c{i}.png" for i in range(new.sum())])
    got = load_head(tmp_path / "e")
    kept, held = holdout_rows(int(new.sum()), DEFAULT_HOLDOUT)
    X_ref = np.vstack([X[old].astype(np.float16).astype(np.float32), X[new][kept]])
    y_ref = np.append(y[old], [3] * len(kept))
    ref = HEADS[head_name]().fit(X_ref, y_ref)
    ref_s = SCORERS[score_name](head=ref, **params).fit(X_ref, y_ref)
    if head_name == "ncm":  # extended from the float32 class means, not from stored features
        ref = HEADS[head_name]().fit(np.vstack([X[old], X[new][kept]]), y_ref)
        ref_s = SCORERS[score_name](head=ref).fit(np.vstack([X[old], X[new][kept]]), y_ref)
    np.testing.assert_allclose(got.predict_proba(X), ref.predict_proba(X), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got.score_samples(X), ref_s.score_samples(X), rtol=1e-4, atol=1e-5)
    assert got.classes == ("real", "a", "b", "c")
    assert rec["method"] == ("extended" if head_name == "ncm" else "refitted")
    assert np.mean(got.predict(X[new][held]) == "c") == 1.0
    # a second enrolment into the enrolled head appends to the record
    enroll_features(got, "d", X[new] + 8, tmp_path / "e2", images=[f"d{i}.png" for i in range(new.sum())])
    assert [r["source"] for r in load_head(tmp_path / "e2").info["enrolments"]] == ["c", "d"]


def test_text_labels_are_kept_and_the_new_one_comes_last(tmp_path: Path) -> None:
    from attrib.probe.heads import HEADS
    from attrib.probe.scorers import SCORERS

    X, y = _blobs(1, 3)
    labels = np.array(["a", "b", "c"])[y]
    head = HEADS["ncm"]().fit(X[y < 2], labels[y < 2])
    save_head(tmp_path / "h", head, SCORERS["msp"](head=head), head_name="ncm", score_name="msp",
              classes=["a", "b"], layer=(1,), threshold=0.0, feature_set="fs", manifest={"model": "m", "weights": "w"},
              check_X=X[:5], training={"val.X": X[y < 2], "val.y": labels[y < 2]})
    saved = load_head(tmp_path / "h")
    enroll_features(saved, "c", X[y == 2], tmp_path / "e", images=[f"{i}.png" for i in range(20)])
    got = load_head(tmp_path / "e")
    assert np.asarray(got.head.classes_).tolist() == ["a", "b", "c"]
    with pytest.raises(EnrollError, match="sort after"):
        enroll_features(saved, "0-first", X[y == 2], tmp_path / "f", images=[f"{i}.png" for i in range(20)])
