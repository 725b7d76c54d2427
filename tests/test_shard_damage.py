"""Damaged shards (truncated, zero bytes, another shard's rows, another feature set's file): every reader
fails naming the shard and the fix, listings never call the set complete, and the damage is repaired by
rerunning `attrib features` (exactly the damaged shards) or removed by `attrib cache verify --repair`."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from attrib.cli import main
from attrib.shard_check import file_damage
from attrib.store import FeatureSet, ShardDamaged, StoreError
from conftest import write_png
from test_store import _full, _manifest

FIX = "Rerun `attrib features` with the same options"


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


def test_file_damage_tells_whole_files_from_empty_foreign_and_truncated_ones(tmp_path: Path) -> None:
    fs, _, _ = _full(tmp_path)
    whole = fs.shard_path(0)
    assert file_damage(whole) == "" and file_damage(tmp_path / "nope.h5") == "missing"
    size = whole.stat().st_size
    for cut in (size - 1, size // 2, 100, 9):
        shutil.copy(whole, tmp_path / "cut.h5")
        _truncate(tmp_path / "cut.h5", cut)
        assert file_damage(tmp_path / "cut.h5").startswith("truncated"), cut
    (tmp_path / "empty.h5").write_bytes(b"")
    assert file_damage(tmp_path / "empty.h5") == "zero bytes"
    (tmp_path / "text.h5").write_bytes(b"hello, not HDF5\n" * 100)
    assert file_damage(tmp_path / "text.h5").startswith("not an HDF5 file")
    with h5py.File(tmp_path / "latest.h5", "w", libver="latest") as f:  # superblock version 3
        f.create_dataset("x", data=np.arange(1000))
    assert file_damage(tmp_path / "latest.h5") == ""
    _truncate(tmp_path / "latest.h5", (tmp_path / "latest.h5").stat().st_size - 10)
    assert file_damage(tmp_path / "latest.h5").startswith("truncated")
    with h5py.File(tmp_path / "userblock.h5", "w", userblock_size=512) as f:  # superblock at byte 512
        f.create_dataset("x", data=np.arange(10))
    assert file_damage(tmp_path / "userblock.h5") == ""


@pytest.mark.parametrize("damage", ["truncated", "zero bytes"])
def test_every_reader_names_a_damaged_shard_and_the_fix(tmp_path: Path, damage: str) -> None:
    fs, cls, _ = _full(tmp_path)
    path = fs.shard_path(1)
    if damage == "truncated":
        _truncate(path, path.stat().st_size // 2)
    else:
        path.write_bytes(b"")
    again = FeatureSet.open(fs.path)
    assert not again.complete and [k for k, _ in again.damaged_shards()] == [1]
    for read in (lambda: again.block(0), lambda: again.embed(), lambda: again.status()):
        with pytest.raises(ShardDamaged, match=rf"shard-00001.h5: {damage}.*{FIX}.*cache verify --repair"):
            read()
    with pytest.raises(ShardDamaged, match=rf"shard-00001.h5 is damaged: {damage}.*{FIX}"):
        again.block(0, [5])  # a row of the damaged shard
    np.testing.assert_array_equal(again.block(2, [0, 9]), cls[[0, 9], 2].astype(np.float16).astype(np.float32))
    assert issubclass(ShardDamaged, StoreError)


def test_a_shard_holding_another_shards_rows_is_refused_on_open(tmp_path: Path) -> None:
    fs, _, _ = _full(tmp_path, n=12)  # three shards of 4 rows
    shutil.copy(fs.shard_path(0), fs.shard_path(2))  # one shard file copied over another
    with pytest.raises(ShardDamaged, match=r"shard-00002.h5 is damaged: holds rows 0..3, expected 8..11"):
        fs.block(1)
    with pytest.raises(ShardDamaged, match="shard-00002.h5"):
        fs.embed([9])
    fs.block(1, [0, 5])  # the other shards still read
    assert dict(fs.verify().broken)[2].startswith("holds rows 0..3, expected 8..11")
    shutil.copy(fs.shard_path(0), fs.shard_path(1))
    assert fs.shard_problem(1) == "holds rows 0..3, expected 4..7 (a copy of another shard's file?)"


def test_a_shard_of_another_feature_set_with_the_same_rows_is_refused(tmp_path: Path) -> None:
    fs, _, _ = _full(tmp_path, name="a")
    other = FeatureSet.create(tmp_path / "b", _manifest(view="jpeg:75"), fs.images)
    other.write_shard(1, *[np.zeros((4, 3, 8)), np.zeros((4, 4)), np.ones(4, bool), [""] * 4])
    shutil.copy(other.shard_path(1), fs.shard_path(1))  # rows 4..7 too, but features of another view
    with pytest.raises(ShardDamaged, match=rf"shard-00001.h5 is damaged: belongs to another feature set "
                                           rf"\(identity {other.manifest.identity_hash}"):
        fs.block(0)
    assert "belongs to another feature set" in dict(fs.verify().broken)[1]


def test_removing_damaged_shards_keeps_whole_ones_and_rechecks_after_moving_aside(tmp_path: Path) -> None:
    fs, _, _ = _full(tmp_path)
    fs.shard_path(2).write_bytes(b"")
    assert fs.remove_damaged_shards() == [(2, "zero bytes")]
    assert fs.shards_done() == [0, 1] and not list(fs.path.glob(".shard-*"))
    # judged damaged at first look, whole when looked at again (re-published meanwhile): put back
    looks = []
    assert fs.remove_damaged_shards([0], lambda k, path: "" if looks.append(path) or len(looks) > 1 else "x") == []
    assert fs.shards_done() == [0, 1] and looks[1] != fs.shard_path(0) and fs.shard_problem(0) == ""


def _folder(root: Path) -> Path:
    for src in ("real", "ganA", "ganB"):
        for i in range(4):
            write_png(root / src / f"{i}.png", seed=i, size=24)
    return root


def _run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.slow
def test_rerunning_features_re_extracts_exactly_the_damaged_shards(tmp_path: Path) -> None:
    root, cache = _folder(tmp_path / "data"), tmp_path / "cache"
    args = ["features", "--dataset", "folder", "--root", str(root), "--model", "attrib-tiny", "--cache", str(cache),
            "--shard-size", "3", "--workers", "0", "--quiet"]
    first = _run(*args)
    assert first.exit_code == 0, first.output
    fs = FeatureSet.open(first.stdout.strip().splitlines()[-1])
    ref = [fs.block(b) for b in range(fs.n_blocks)]
    untouched = {k: fs.shard_path(k).stat().st_ino for k in (0, 2)}

    _truncate(fs.shard_path(1), 3000)
    fs.shard_path(3).write_bytes(b"")
    ls = _run("cache", "ls", str(cache))
    assert "complete" not in ls.output and "2/4 shards, 2 DAMAGED" in ls.output
    assert "2 DAMAGED" in _run("cache", "info", str(fs.path)).output
    probe = _run("probe", "--features", str(fs.path), "--out", str(tmp_path / "r"), "--quiet")
    assert probe.exit_code == 2 and "shard-00001.h5: truncated" in probe.output and FIX in probe.output
    assert "Traceback" not in probe.output
    assert _run("cache", "find", "--cache", str(cache), "--model", "attrib-tiny").exit_code == 1

    again = _run(*args)
    assert again.exit_code == 0, again.output
    assert "re-extracting 2 damaged shard(s)" in again.stderr
    assert "shard-00001.h5: truncated" in again.stderr and "shard-00003.h5: zero bytes" in again.stderr
    assert "done: 6 images" in again.stderr and "2 shards, " in again.stderr
    assert {k: fs.shard_path(k).stat().st_ino for k in (0, 2)} == untouched  # whole shards left alone
    fs = FeatureSet.open(fs.path)
    assert fs.verify().ok
    for b in range(fs.n_blocks):
        np.testing.assert_array_equal(fs.block(b), ref[b])

    done = _run(*args)
    assert done.exit_code == 0 and "already complete: 12 images in 4 shards" in done.stderr
    assert "done:" not in done.stderr and "img/s" not in done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(fs.path)


def test_cache_verify_repair_removes_broken_shards_and_says_to_rerun(tmp_path: Path) -> None:
    fs, _, _ = _full(tmp_path, n=12)
    shutil.copy(fs.shard_path(0), fs.shard_path(2))  # wrong rows
    with h5py.File(fs.shard_path(1), "r+") as f:  # a flipped value: only the checksum sees it
        f["cls"][0, 0, 0] = f["cls"][0, 0, 0] + 1
    plain = _run("cache", "verify", str(fs.path))
    assert plain.exit_code == 1 and "--repair" in plain.output and fs.shards_done() == [0, 1, 2]
    res = _run("cache", "verify", "--repair", str(fs.path))
    assert res.exit_code == 1
    assert "REMOVED shard-00001.h5: checksum mismatch" in res.output
    assert "REMOVED shard-00002.h5: holds rows 0..3, expected 8..11" in res.output
    assert "removed 2 broken shard(s)" in res.output and "rerun `attrib features`" in res.output
    assert fs.shards_done() == [0] and fs.shards_todo() == [1, 2]
    assert _run("cache", "verify", "--repair", str(fs.path)).output.count("REMOVED") == 0
