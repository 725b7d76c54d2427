"""`attrib predict` end to end on the demo: train on the known classes, attribute held-out images."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from attrib.cli import main
from attrib.data.sampling import SampledSplits
from attrib.data.splits import builtin_splits
from attrib.extract.runner import RunConfig
from attrib.predict import PredictError, collect_images, write_predictions
from attrib.predict import predict as run_predict
from attrib.probe.metrics import threshold_at_tpr
from attrib.probe.persist import load_head
from attrib.store import FeatureSet


def _run(args: list[str], ok: bool = True) -> str:
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    if ok:
        assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def trained(demo_root: Path, tiny_checkpoint: Path, tmp_path_factory) -> dict:
    """Features of the demo (tiny checkpoint), a probe on split 1 and the head it saved."""
    tmp = tmp_path_factory.mktemp("predict")
    out = _run(["features", "--dataset", "demo", "--root", str(demo_root), "--model", "attrib-tiny",
                "--pretrained", str(tiny_checkpoint), "--cache", str(tmp / "cache"), "--workers", "0", "--quiet"])
    fs = FeatureSet.open(out.strip().splitlines()[-1])
    head = tmp / "head"
    _run(["probe", "--features", str(fs.path), "--splits", "1", "--layers", "3", "--heads", "logreg",
          "--scores", "msp", "--grid", "C=0.01,0.1,1,10", "--save-head", str(head), "--out", str(tmp / "results"),
          "--quiet"])
    line = json.loads((tmp / "results" / "results.jsonl").read_text().splitlines()[0])
    ok, _ = fs.status()
    rows = SampledSplits(fs.images, ok, builtin_splits("demo")).rows("1", 0)
    return {"tmp": tmp, "fs": fs, "head": head, "line": line, "rows": rows}


def _read_csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {r["path"]: r for r in csv.DictReader(f)}


def test_predictions_equal_the_probes_metrics(trained: dict, tmp_path: Path) -> None:
    fs, rows, line = trained["fs"], trained["rows"], trained["line"]
    saved = load_head(trained["head"])
    abspath = lambda r: str(Path(fs.images.root) / fs.images.paths[r])  # noqa: E731
    listing = tmp_path / "to_check.txt"
    listing.write_text("\n".join(abspath(r) for r in np.r_[rows.test, rows.test_unknown]) + "\n")

    out = _run(["predict", "--head", str(trained["head"]), str(listing), "--out", str(tmp_path / "p.csv"),
                "--cache", str(trained["tmp"] / "cache"), "--workers", "0", "--quiet"])
    assert out.strip().splitlines()[-1] == str(tmp_path / "p.csv")
    pred = _read_csv(tmp_path / "p.csv")
    assert len(pred) == len(rows.test) + len(rows.test_unknown)

    # closed-set accuracy on the known test rows equals the probe's line for the same rows
    known = [pred[abspath(r)] for r in rows.test]
    truth = [fs.images.sources[r] for r in rows.test]
    acc = np.mean([p["prediction"] == t for p, t in zip(known, truth)])
    assert acc == pytest.approx(line["accuracy"], abs=1e-12)

    # decisions at the saved threshold equal those computed from the cached features of the same rows
    for part in (rows.test, rows.test_unknown):
        cached = saved.decide(saved.features(fs, part))
        got = np.array([pred[abspath(r)]["decision"] for r in part], dtype=object)
        assert (got == cached).all()
        scores = np.array([float(pred[abspath(r)]["score"]) for r in part])
        np.testing.assert_allclose(scores, saved.score_samples(saved.features(fs, part)), atol=1e-4)
    rejected = np.mean([pred[abspath(r)]["decision"] == "unknown" for r in rows.test_unknown])
    expect = np.mean(saved.score_samples(saved.features(fs, rows.test_unknown)) < saved.threshold)
    assert rejected == expect
    top = known[0]
    assert top["top1_source"] == top["prediction"] and float(top["top1_probability"]) >= float(top["top2_probability"])

    # at the probe's own operating point (the threshold accepting 95% of the known test rows, where its
    # fpr95 is measured), predict's decisions accept exactly the probe's fpr95 of the unknown rows
    t = threshold_at_tpr([float(p["score"]) for p in known], 0.95)
    _run(["predict", "--head", str(trained["head"]), str(listing), "--out", str(tmp_path / "at95.csv"),
          "--threshold", repr(t), "--cache", str(trained["tmp"] / "cache"), "--workers", "0", "--quiet"])
    at95 = _read_csv(tmp_path / "at95.csv")
    assert np.mean([at95[abspath(r)]["decision"] != "unknown" for r in rows.test]) >= 0.95
    accepted = np.mean([at95[abspath(r)]["decision"] != "unknown" for r in rows.test_unknown])
    assert 0 < accepted < 1 and accepted == pytest.approx(line["fpr95"], abs=1e-12)


def test_folders_broken_files_threshold_and_jsonl(trained: dict, demo_root: Path, tmp_path: Path) -> None:
    folder = demo_root / "fractal" / "val" / "ai"
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    out = tmp_path / "p.jsonl"
    _run(["predict", "--head", str(trained["head"]), str(folder), str(broken), "--out", str(out), "--format", "jsonl",
          "--threshold", "2", "--cache", str(trained["tmp"] / "cache"), "--workers", "0", "--quiet"])
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == len(list(folder.glob("*.png"))) + 1
    bad = [r for r in recs if r["path"] == str(broken)][0]
    assert bad["decision"] == "error" and bad["error"] and bad["prediction"] == "" and bad["score"] is None
    good = [r for r in recs if r["path"] != str(broken)]
    # a threshold above any softmax probability rejects everything
    assert all(r["decision"] == "unknown" and r["error"] == "" and len(r["top"]) == 3 for r in good)


def test_odd_file_names_are_attributed_or_skipped_with_a_note(trained: dict, demo_root: Path, tmp_path: Path) -> None:
    """A name that is not UTF-8 crashed predict (UnicodeEncodeError); a tab in a name aborted every image."""
    import os
    import shutil

    folder = tmp_path / "odd"
    folder.mkdir()
    src = next((demo_root / "fractal" / "val" / "ai").glob("*.png"))
    shutil.copy(src, folder / "plain.png")
    shutil.copy(src, folder / "tab\there.png")
    try:
        shutil.copy(src, os.fsdecode(os.fsencode(folder) + b"/bad\xff\xfe.png"))
    except OSError:
        pytest.skip("this file system does not store file names that are not UTF-8")
    res = CliRunner().invoke(main, ["predict", "--head", str(trained["head"]), str(folder), "--out",
                                    str(tmp_path / "p.csv"), "--cache", str(tmp_path / "c"), "--workers", "0",
                                    "--quiet"])
    assert res.exit_code == 0, res.output
    assert "note: 1 image file(s) skipped: a tab or line break in the name" in res.output
    rows = _read_csv(tmp_path / "p.csv")
    assert set(rows) == {str(folder / "plain.png"), str(folder / "bad\\xff\\xfe.png")}  # escaped, UTF-8 text
    a, b = rows.values()
    assert a["error"] == b["error"] == "" and a["score"] == b["score"]  # the same pixels, the same prediction


def test_a_different_backbone_is_refused(trained: dict, tmp_path: Path, demo_root: Path) -> None:
    other = tmp_path / "other.safetensors"
    from safetensors.torch import load_file, save_file

    sd = load_file(str(trained["fs"].manifest.checkpoint))
    sd = {k: v + 0.01 if v.is_floating_point() else v for k, v in sd.items()}
    save_file(sd, str(other))
    res = CliRunner().invoke(main, ["predict", "--head", str(trained["head"]), str(demo_root / "deconv"),
                                    "--out", str(tmp_path / "p.csv"), "--pretrained", str(other),
                                    "--cache", str(tmp_path / "c"), "--quiet"])
    assert res.exit_code == 2
    assert "weights_sha256" in res.output and "does not reproduce the head's features" in res.output
    assert not (tmp_path / "p.csv").exists()


def test_collect_images_errors(tmp_path: Path) -> None:
    with pytest.raises(PredictError, match="no such file"):
        collect_images([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(PredictError, match="no image files"):
        collect_images([tmp_path / "empty"])
    lst = tmp_path / "list.txt"
    lst.write_text("# comment\na.png\nnotes.docx\n")
    with pytest.raises(PredictError, match=r"list.txt:3: 'notes.docx'"):
        collect_images([lst])
    lst.write_text("a.png\nsub/b.jpg\na.png\n")
    imgs = collect_images([lst])
    assert imgs.paths == sorted({str(tmp_path / "a.png"), str(tmp_path / "sub" / "b.jpg")})
    (tmp_path / "photo.heic").write_bytes(b"\x00\xff\xfe\x00ftypheic")  # an image type attrib does not read
    with pytest.raises(PredictError, match=r"photo.heic: not an image file attrib reads \(.*\.png.*\) and not a "
                                           r"list file"):
        collect_images([tmp_path / "photo.heic"])


def test_bad_options_fail_before_extraction_and_leave_no_file(trained: dict, demo_root: Path, tmp_path: Path) -> None:
    saved = load_head(trained["head"])
    with pytest.raises(PredictError, match="--format 'xml'"):  # checked before any image is read
        run_predict(saved, [demo_root / "deconv" / "val" / "ai"], tmp_path / "p.xml", fmt="xml",
                    cache=tmp_path / "c", config=RunConfig(workers=0, progress=False))
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    for out, why in ((tmp_path / "file" / "p.csv", "file is a file, so nothing can be created under it"),
                     (tmp_path / "folder", " is a folder; give a file name")):
        with pytest.raises(PredictError, match=rf"^--out {out}\b.*{why}"):  # so is where the rows go
            run_predict(saved, [demo_root / "deconv" / "val" / "ai"], out, cache=tmp_path / "c",
                        config=RunConfig(workers=0, progress=False))
        with pytest.raises(PredictError, match=why):
            write_predictions(iter([]), out, "csv", 1)
    assert not (tmp_path / "c").exists()
    (tmp_path / "file").unlink()
    (tmp_path / "folder").rmdir()

    def failing():
        yield {"path": "a.png", "prediction": "real", "score": 1.0, "decision": "real", "top": [("real", 1.0)],
               "error": ""}
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        write_predictions(failing(), tmp_path / "p.csv", "csv", 1)
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary file is left behind


def test_a_moved_checkpoint_is_accepted_by_its_sha256(trained: dict, tmp_path: Path, demo_root: Path) -> None:
    import shutil

    moved = tmp_path / "renamed-elsewhere.safetensors"
    shutil.copyfile(trained["fs"].manifest.checkpoint, moved)
    out = tmp_path / "p.csv"
    _run(["predict", "--head", str(trained["head"]), str(demo_root / "palette" / "val" / "ai"), "--out", str(out),
          "--pretrained", str(moved), "--cache", str(tmp_path / "c"), "--workers", "0", "--quiet"])
    assert len(_read_csv(out)) == len(list((demo_root / "palette" / "val" / "ai").glob("*.png")))
