"""The cache commands and the store on bad input: clear errors, never a traceback, and `cache find`
finds exactly the feature set `attrib features` would extract into."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from attrib.cli import main
from attrib.store import FeatureSet, StoreError, feature_set_name
from conftest import write_png


def _folder_dataset(root: Path, counts: dict[str, int]) -> Path:
    for source, n in counts.items():
        for i in range(n):
            write_png(root / source / f"{source}_{i}.png", seed=i, size=24)
    return root


def _run(*args: str) -> "click.testing.Result":  # noqa: F821
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _features(root: Path, cache: Path, *extra: str) -> Path:
    res = _run("features", "--dataset", "folder", "--root", str(root), "--model", "attrib-tiny",
               "--cache", str(cache), "--workers", "0", "--quiet", *extra)
    assert res.exit_code == 0, res.output
    return Path(res.output.strip().splitlines()[-1])


def _find(cache: Path, *extra: str) -> "click.testing.Result":  # noqa: F821
    return _run("cache", "find", "--cache", str(cache), "--model", "attrib-tiny", *extra)


def test_cache_find_matches_the_image_list_not_the_options_that_made_it(tmp_path: Path) -> None:
    root = _folder_dataset(tmp_path / "data", {"real": 3, "ganA": 5})
    cache = tmp_path / "cache"
    full = _features(root, cache)
    # N at least every group's size: the same list, so `features --max-per-source 5` reuses this folder
    assert _features(root, cache, "--max-per-source", "5") == full
    for n in ("5", "6", "100"):
        assert _find(cache, "--max-per-source", n).output.strip() == str(full)
    assert _find(cache, "--limit", "8").output.strip() == str(full)
    cut = _find(cache, "--max-per-source", "4")  # ganA would be cut: another list, not extracted yet
    assert cut.exit_code == 1 and "--max-per-source 4" in cut.output and "Traceback" not in cut.output
    assert _find(cache, "--limit", "7").exit_code == 1

    sampled = _features(root, cache, "--max-per-source", "4")
    assert sampled != full
    assert _find(cache, "--max-per-source", "4").output.strip() == str(sampled)
    assert _find(cache, "--max-per-source", "4", "--sample-seed", "1").exit_code == 1  # another draw
    assert _find(cache).output.strip() == str(full)  # unsampled: the cut set never matches


def test_unusable_output_locations_are_clear_errors(tmp_path: Path) -> None:
    root = _folder_dataset(tmp_path / "data", {"real": 1, "ganA": 1})
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for args in (("--out", str(a_file)), ("--cache", str(a_file))):
        res = _run("features", "--dataset", "folder", "--root", str(root), "--model", "attrib-tiny",
                   "--workers", "0", "--quiet", *args)
        assert res.exit_code == 2 and "cannot create the feature-set folder" in res.output, res.output


def test_long_names_are_cut_but_stay_unique() -> None:
    base = {"dataset": "demo", "model": "local-dir:/" + "m" * 300, "weights": "w", "view": "none"}
    a, b = feature_set_name(base), feature_set_name({**base, "weights": "w2"})
    assert len(a.encode()) <= 255 and len(b.encode()) <= 255 and a != b


def test_damaged_feature_sets_are_reported_not_crashed_on(tmp_path: Path) -> None:
    root = _folder_dataset(tmp_path / "data", {"real": 2, "ganA": 2})
    cache = tmp_path / "cache"
    good = _features(root, cache)
    for name, manifest in (("list", "[1, 2]"), ("fields", json.dumps({"format_version": 1}))):
        (cache / name).mkdir()
        (cache / name / "manifest.json").write_text(manifest)
    ls = _run("cache", "ls", str(cache))
    assert ls.exit_code == 0 and ls.output.count("\n") == 1 and str(good) in ls.output

    (good / ".shard-00000.h5.tmp-otherhost-123-abcd").write_bytes(b"partial")
    ver = _run("cache", "verify", str(good))
    assert ver.exit_code == 0 and "leftover temporary file .shard-00000.h5.tmp-otherhost" in ver.output

    (good / "images.tsv").unlink()
    info = _run("cache", "info", str(good))
    assert info.exit_code == 2 and "images.tsv: missing or unreadable" in info.output
    assert _run("cache", "verify", str(good)).exit_code == 1
    with pytest.raises(StoreError, match="rerun `attrib features`"):
        _ = FeatureSet.open(good).images


def test_a_study_whose_every_line_fails_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from attrib.probe.scorers import SCORERS, MaxLogit

    class Boom(MaxLogit):
        def score_samples(self, X):
            raise FloatingPointError("singular covariance")

    monkeypatch.setitem(SCORERS, "boom", Boom)
    root = _folder_dataset(tmp_path / "data", {"real": 6, "ganA": 6, "ganB": 6})
    (tmp_path / "splits.yaml").write_text("A:\n  known: [ganA]\n  unknown: [ganB]\n")
    fs = _features(root, tmp_path / "cache")
    res = _run("probe", "--features", str(fs), "--split-file", str(tmp_path / "splits.yaml"), "--layers", "1",
               "--scores", "boom", "--grid", "C=1", "--out", str(tmp_path / "results"), "--quiet")
    assert res.exit_code == 1
    assert "singular covariance" in res.output and "all 1 result line(s) failed" in res.output, res.output


@pytest.mark.slow
def test_reruns_say_already_complete_or_what_is_left_to_other_ranks(tmp_path: Path) -> None:
    root = _folder_dataset(tmp_path / "data", {"real": 2, "ganA": 2})
    cache, opts = tmp_path / "cache", ("--shard-size", "1", "--world-size", "2")
    for rank, want in ((0, "done: 2 images"), (0, "nothing to do for rank 0 of 2: its shards are done; 2 shards of "
                                                   "other ranks still missing"), (1, "done: 2 images")):
        res = _run("features", "--dataset", "folder", "--root", str(root), "--model", "attrib-tiny", "--cache",
                   str(cache), "--workers", "0", "--quiet", *opts, "--rank", str(rank))
        assert res.exit_code == 0 and want in res.stderr, res.output
    res = _run("features", "--dataset", "folder", "--root", str(root), "--model", "attrib-tiny", "--cache", str(cache),
               "--workers", "0", "--quiet")
    assert "already complete: 4 images in 4 shards; nothing to extract" in res.stderr
    assert "img/s" not in res.stderr and "done:" not in res.stderr
