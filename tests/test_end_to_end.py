"""The whole path through the CLI: demo images -> features (tiny model from a checkpoint) -> probe -> report."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
from click.testing import CliRunner

from attrib.cli import main
from attrib.probe.persist import load_head
from attrib.store import FeatureSet


def _run(args: list[str]) -> str:
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def test_features_probe_report(demo_root: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = _run(["features", "--dataset", "demo", "--root", str(demo_root), "--model", "attrib-tiny",
                "--pretrained", str(tiny_checkpoint), "--cache", str(tmp_path / "cache"), "--workers", "0",
                "--shard-size", "50", "--quiet"])
    fs_path = Path(out.strip().splitlines()[-1])
    assert fs_path.parent == tmp_path / "cache" and fs_path.name.startswith("demo__attrib-tiny__tiny-weights")
    fs = FeatureSet.open(fs_path)
    assert fs.complete and fs.n_images == 24 * 8 and fs.n_blocks == 4 and fs.width == 64
    assert fs.manifest.weights_sha256 and fs.label == ""  # a checkpoint, not random-init
    with h5py.File(fs.shard_path(0)) as f:  # the documented on-disk format
        assert f["cls"].dtype == np.float16 and f["cls"].shape == (50, 4, 64)
        assert f["cls"].chunks[1] == 1 and f.attrs["complete"] == 1
    assert "OK" in _run(["cache", "verify", str(fs_path)])

    res_dir = tmp_path / "results"
    table = _run(["probe", "--features", str(fs_path), "--out", str(res_dir), "--quiet"])
    lines = [json.loads(x) for x in (res_dir / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 3 * 4  # 3 demo splits x 4 blocks
    for r in lines:
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["auroc"] <= 1 and 0 <= r["oscr"] <= r["accuracy"] + 1e-9
    assert (res_dir / "table.md").exists() and (res_dir / "metrics_by_layer.png").stat().st_size > 1000
    rerun = _run(["probe", "--features", str(fs_path), "--out", str(res_dir), "--quiet"])
    assert len((res_dir / "results.jsonl").read_text().splitlines()) == 12  # resumed: nothing redone
    report = _run(["report", str(res_dir)])
    assert "| 3 | logreg | msp | all | clean | 3 |" in report
    for name in ("per_unknown.csv", "table.csv", "confusion.png"):
        assert (res_dir / name).stat().st_size > 100
    del table, rerun

    # a head to keep: one split, two blocks, a short C grid, two processes
    head_dir = tmp_path / "head"
    _run(["probe", "--features", str(fs_path), "--splits", "2", "--layers", "2-3", "--grid", "C=0.1,1",
          "--jobs", "2", "--save-head", str(head_dir), "--out", str(tmp_path / "r2"), "--quiet"])
    saved = load_head(head_dir)
    assert saved.feature_set == fs.id and saved.manifest == fs.manifest and saved.layer in ((2,), (3,))
    assert saved.classes[0] == "real" and len(saved.classes) == 5 and saved.info["hparams"]["C"] in (0.1, 1)
    X = saved.features(fs, np.arange(10))
    assert set(saved.decide(X)) <= set(saved.classes) | {"unknown"}


def test_offline_fallback_is_labelled(demo_root: Path, tmp_path: Path, monkeypatch) -> None:
    import attrib.extract.weights as weights

    monkeypatch.setattr(weights, "online", lambda *a, **k: False)
    monkeypatch.setattr(weights, "_cached_tag_file", lambda cfg: None)
    res = CliRunner().invoke(main, [
        "features", "--dataset", "demo", "--root", str(demo_root), "--model", "ViT-B-16",
        "--pretrained", "laion2b_s34b_b88k", "--fallback-model", "attrib-tiny",
        "--cache", str(tmp_path / "cache"), "--workers", "0", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "FALLING BACK to attrib-tiny" in res.output and "not CLIP features" in res.output
    fs = FeatureSet.open(res.output.strip().splitlines()[-1])
    assert fs.manifest.model == "attrib-tiny" and fs.manifest.weights == "random-init"
    assert fs.label == "random-init: pipeline check, not CLIP features"
    assert fs.manifest.requested.model == "ViT-B-16"
    find = CliRunner().invoke(main, ["cache", "find", "--cache", str(tmp_path / "cache"), "--dataset", "demo",
                                     "--model", "ViT-B-16", "--pretrained", "laion2b_s34b_b88k"])
    found = find.stdout  # the path alone on stdout (what `make probe` reads); the note goes to stderr
    assert found.strip() == str(fs.path)
    assert find.exit_code == 0 and "asked for ViT-B-16 laion2b_s34b_b88k" in find.stderr and "FALLBACK" in find.stderr
    assert "attrib-tiny (random-init)" in find.stderr and "not CLIP features" in find.stderr

    res_dir = tmp_path / "r"
    _run(["probe", "--features", str(fs.path), "--out", str(res_dir), "--layers", "3", "--splits", "1",
          "--quiet"])
    assert all(json.loads(x)["label"] == fs.label for x in (res_dir / "results.jsonl").read_text().splitlines())
    assert "WARNING — random-init" in (res_dir / "table.md").read_text()


def test_without_fallback_missing_weights_fail_clearly(demo_root: Path, tmp_path: Path, monkeypatch) -> None:
    import attrib.extract.weights as weights

    monkeypatch.setattr(weights, "online", lambda *a, **k: False)
    monkeypatch.setattr(weights, "_cached_tag_file", lambda cfg: None)
    res = CliRunner().invoke(main, ["features", "--dataset", "demo", "--root", str(demo_root),
                                    "--cache", str(tmp_path / "c"), "--quiet"])
    assert res.exit_code == 2
    assert "not in the local cache" in res.output and "--pretrained /path/to/weights" in res.output
