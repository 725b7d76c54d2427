"""The feature cache on disk: format, atomic shards, readers, manifest checks, concurrency, verify."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import h5py
import numpy as np
import pytest

from attrib.data.catalog import ImageList
from attrib.shard_write import shard_checksum
from attrib.store import (IMAGES, MANIFEST, FeatureSet, ManifestMismatch, StoreError, feature_set_name,
                          list_feature_sets)

L, D, E = 3, 8, 4


def _images(n: int = 10) -> ImageList:
    return ImageList.from_rows([(f"src{i % 3}/img{i:03d}.png", f"src{i % 3}", "train") for i in range(n)],
                               root="/data")


def _manifest(**over) -> dict:
    m = {"dataset": "t", "family": "open_clip", "model": "m", "weights": "w", "weights_sha256": "",
         "quick_gelu": False, "preprocess": {"size": 64, "mean": [0.5, 0.5, 0.5]}, "view": "none",
         "n_blocks": L, "width": D, "embed_dim": E, "shard_size": 4, "precision": "fp32", "root": "/data"}
    m.update(over)
    return m


def _arrays(fs: FeatureSet, k: int, seed: int = 0):
    start, stop = fs.shard_range(k)
    n = stop - start
    rng = np.random.default_rng(seed * 1000 + k)
    cls = rng.standard_normal((n, L, D)).astype(np.float32)
    emb = rng.standard_normal((n, E)).astype(np.float32)
    ok = np.ones(n, bool)
    err = [""] * n
    if k == 1:
        ok[1], err[1], cls[1], emb[1] = False, "OSError: image file is truncated", 0, 0
    return cls, emb, ok, err


def _full(tmp_path: Path, n: int = 10, name: str = "fs", seed: int = 0) -> tuple[FeatureSet, np.ndarray, np.ndarray]:
    fs = FeatureSet.create(tmp_path / name, _manifest(), _images(n))
    all_cls, all_emb = [], []
    for k in range(fs.n_shards):
        cls, emb, ok, err = _arrays(fs, k, seed)
        fs.write_shard(k, cls, emb, ok, err)
        all_cls.append(cls)
        all_emb.append(emb)
    return fs, np.concatenate(all_cls), np.concatenate(all_emb)


def test_roundtrip_format_and_readers(tmp_path: Path) -> None:
    fs, cls, emb = _full(tmp_path)
    assert fs.n_shards == 3 and fs.complete and sorted(p.name for p in fs.path.iterdir()) == [
        IMAGES, MANIFEST, "shard-00000.h5", "shard-00001.h5", "shard-00002.h5"]
    again = FeatureSet.open(fs.path)  # a fresh reader sees what the writer wrote
    assert again.images.paths == _images().paths and again.images.root == "/data"
    with h5py.File(again.shard_path(2)) as f:  # the documented format, last (short) shard
        assert f["row"][:].tolist() == [8, 9] and f["cls"].dtype == np.float16 and f["cls"].shape == (2, L, D)
        assert f["cls"].chunks[1:] == (1, D) and f["embed"].shape == (2, E) and f["ok"].dtype == bool
        assert f.attrs["complete"] == 1 and len(f.attrs["sha256"]) == 64
    for layer in range(L):
        b = again.block(layer)
        assert b.dtype == np.float32 and b.shape == (10, D)
        np.testing.assert_array_equal(b, cls[:, layer].astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(again.block(-1), again.block(L - 1))
    np.testing.assert_array_equal(again.embed(), emb.astype(np.float16).astype(np.float32))
    rows = np.array([9, 0, 5, 5, 2])  # any order, repeats, across shards
    np.testing.assert_array_equal(again.block(1, rows), again.block(1)[rows])
    np.testing.assert_array_equal(again.embed(rows), again.embed()[rows])
    assert again.block(0, []).shape == (0, D)
    paths = again.images.paths
    assert paths == sorted(paths) and again.rows([paths[5], paths[0]]).tolist() == [5, 0]
    with pytest.raises(KeyError, match="nope.png"):
        again.rows(["nope.png"])
    with pytest.raises(IndexError, match="blocks 0..2"):
        again.block(3)
    with pytest.raises(IndexError):
        again.block(0, [10])
    ok, errors = again.status()
    assert ok.tolist() == [True] * 5 + [False] + [True] * 4 and errors[5] == "OSError: image file is truncated"


def test_block_chunks_lie_contiguously_on_disk(tmp_path: Path) -> None:
    """Reading one block is one sequential read: its chunks are adjacent in the file, in row order."""
    fs = FeatureSet.create(tmp_path / "big", _manifest(width=256, shard_size=3000), _images(3000))
    rng = np.random.default_rng(0)
    fs.write_shard(0, rng.standard_normal((3000, L, 256)), rng.standard_normal((3000, E)), np.ones(3000, bool),
                   [""] * 3000)
    with h5py.File(fs.shard_path(0)) as f:
        ds = f["cls"]
        assert ds.compression is None and ds.chunks[0] < 3000  # several chunks per block
        for layer in range(L):
            infos = [ds.id.get_chunk_info_by_coord((r, layer, 0)) for r in range(0, 3000, ds.chunks[0])]
            for a, b in zip(infos, infos[1:]):
                assert b.byte_offset == a.byte_offset + a.size
    np.testing.assert_array_equal(fs.block(2, np.arange(2999, -1, -7)), fs.block(2)[np.arange(2999, -1, -7)])


def test_incomplete_feature_set_says_how_to_finish(tmp_path: Path) -> None:
    fs = FeatureSet.create(tmp_path / "fs", _manifest(), _images())
    assert fs.write_shard(0, *_arrays(fs, 0)) == fs.shard_path(0)  # published by this call
    assert fs.shards_done() == [0] and fs.shards_todo() == [1, 2] and fs.shards_todo(1, 2) == [1]
    assert fs.block(0, [0, 3]).shape == (2, D)  # complete shards are readable already
    with pytest.raises(StoreError, match="shard-00001.h5 is missing.*Rerun `attrib features`"):
        fs.block(0, [4])
    with pytest.raises(StoreError, match="2 of 3 shards missing"):
        fs.block(0)


def test_completeness_looks_at_each_shard_once_and_missing_comes_first(tmp_path: Path, monkeypatch) -> None:
    """Every open checks completeness, and a set can have thousands of shards: one look at each file.
    A set with missing and damaged shards is reported incomplete first (the fix is to finish it)."""
    import os

    fs = FeatureSet.create(tmp_path / "fs", _manifest(), _images())
    for k in range(fs.n_shards):
        fs.write_shard(k, *_arrays(fs, k))
    looked, stat = [], os.stat
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: looked.append(Path(path).name) or stat(path, *a, **k))
    assert fs.complete
    fs.require_complete()
    shards = [fs.shard_path(k).name for k in range(fs.n_shards)]
    assert sorted(n for n in looked if n.startswith("shard-")) == sorted(2 * shards)
    fs.shard_path(2).write_bytes(b"")                      # damaged
    with pytest.raises(StoreError, match=r"1 of 3 shards damaged \(shard-00002.h5: zero bytes\)"):
        fs.require_complete()
    fs.shard_path(0).unlink()                              # and missing
    assert not fs.complete
    with pytest.raises(StoreError, match="1 of 3 shards missing"):
        fs.require_complete()


def test_existing_shard_is_never_replaced_and_shapes_are_checked(tmp_path: Path) -> None:
    fs, cls, _ = _full(tmp_path)
    before = fs.shard_path(0).read_bytes()
    other = _arrays(fs, 0, seed=7)
    assert fs.write_shard(0, *other) is None  # another writer's shard: kept, and not ours
    assert fs.shard_path(0).read_bytes() == before
    with pytest.raises(StoreError, match=r"expected \(4, 3, 8\)"):
        fs.write_shard(1, np.zeros((4, L, D + 1)), np.zeros((4, E)), np.ones(4, bool), [""] * 4)
    assert not list(fs.path.glob(".shard-*"))  # no temporary files left behind


def test_manifest_mismatch_names_each_differing_field(tmp_path: Path) -> None:
    FeatureSet.create(tmp_path / "fs", _manifest(), _images())
    with pytest.raises(ManifestMismatch) as err:
        FeatureSet.create(tmp_path / "fs", _manifest(model="other", shard_size=5,
                                                     preprocess={"size": 224, "mean": [0.5, 0.5, 0.5]}),
                          _images())
    msg = str(err.value)
    assert "model: cache has 'm', this run has 'other'" in msg
    assert "shard_size: cache has 4, this run has 5" in msg
    assert "preprocess.size: cache has 64, this run has 224" in msg and "preprocess.mean" not in msg
    assert "weights:" not in msg
    with pytest.raises(ManifestMismatch, match="images_sha256.*\n.*n_images: cache has 10, this run has 9"):
        FeatureSet.create(tmp_path / "fs", _manifest(), _images(9))
    same = FeatureSet.create(tmp_path / "fs", _manifest(), _images())  # same settings reopen fine
    assert same.n_images == 10


def test_folder_name_is_readable_and_unique_per_identity() -> None:
    base = {**_manifest(), "images_sha256": "abc"}
    name = feature_set_name(base)
    assert name.startswith("t__m__w-") and len(name.rsplit("-", 1)[1]) == 8
    assert feature_set_name({**base, "view": "jpeg:75"}).startswith("t__m__w__jpeg_75-")
    assert feature_set_name({**base, "view": "jpeg:75"}) != feature_set_name({**base, "view": "jpeg:90"})
    assert feature_set_name({**base, "quick_gelu": True}) != name
    assert feature_set_name({**base, "shard_size": 99}) == name  # not identity: how, not what


def test_missing_image_list_is_rewritten_on_reopen(tmp_path: Path) -> None:
    fs = FeatureSet.create(tmp_path / "fs", _manifest(), _images())
    (fs.path / IMAGES).unlink()  # creator killed between manifest and image list
    FeatureSet.create(tmp_path / "fs", _manifest(), _images())
    assert FeatureSet.open(fs.path).images.paths == _images().paths


def test_file_systems_without_hard_links_still_publish_atomically(tmp_path: Path, monkeypatch) -> None:
    """No hard links (some network and FUSE file systems): the manifest still goes to the first creator,
    shards and the image list are renamed into place, and no temporary file is left behind."""
    import os

    def no_links(src, dst, *a, **k):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    fs, cls, _ = _full(tmp_path)
    from attrib import atomic

    before = (fs.path / MANIFEST).read_bytes()
    assert not atomic.write_bytes(fs.path / MANIFEST, b"{}", atomic.EXCLUSIVE)  # a racing creator loses
    assert (fs.path / MANIFEST).read_bytes() == before
    again = FeatureSet.open(fs.path)
    assert again.verify().ok and again.manifest.model == "m"
    np.testing.assert_array_equal(again.block(2), cls[:, 2].astype(np.float16).astype(np.float32))
    assert sorted(p.name for p in fs.path.iterdir()) == [IMAGES, MANIFEST, "shard-00000.h5", "shard-00001.h5",
                                                        "shard-00002.h5"]


def _create_and_write(path: str, k: int, barrier) -> str:
    images = _images()
    barrier.wait()
    fs = FeatureSet.create(path, _manifest(), images)
    for _ in range(3):
        for shard in (k % 3, (k + 1) % 3):
            fs.write_shard(shard, *_arrays(fs, shard))
    return fs.images.sha256()


def test_processes_racing_on_one_feature_set_and_shard_never_corrupt_it(tmp_path: Path) -> None:
    """Four processes create the same feature set at once and write overlapping shards repeatedly."""
    ctx = mp.get_context("fork")
    path = str(tmp_path / "fs")
    with ctx.Manager() as mgr:
        barrier = mgr.Barrier(4)
        with ctx.Pool(4) as pool:
            sums = pool.starmap(_create_and_write, [(path, k, barrier) for k in range(4)])
    assert len(set(sums)) == 1
    fs = FeatureSet.open(path)
    rep = fs.verify()
    assert rep.ok and not rep.missing and not rep.broken, rep
    assert [r for r, _, _ in rep.failed] == [5]
    assert sorted(p.name for p in fs.path.iterdir()) == [IMAGES, MANIFEST, "shard-00000.h5", "shard-00001.h5",
                                                        "shard-00002.h5"]
    expected = np.concatenate([_arrays(fs, k)[0] for k in range(3)])
    np.testing.assert_array_equal(fs.block(2), expected[:, 2].astype(np.float16).astype(np.float32))


def test_verify_catches_missing_corrupt_and_nonfinite(tmp_path: Path) -> None:
    fs, _, _ = _full(tmp_path, n=14)  # shards 0..3
    assert fs.verify().ok
    fs.shard_path(3).unlink()  # missing shard
    raw = bytearray(fs.shard_path(0).read_bytes())  # garbage in the header
    raw[:64] = b"\xff" * 64
    fs.shard_path(0).write_bytes(bytes(raw))
    with h5py.File(fs.shard_path(2), "r+") as f:  # flipped feature value: HDF5 itself cannot notice
        v = f["cls"][1, 0, 0]
        f["cls"][1, 0, 0] = v + 1
    with h5py.File(fs.shard_path(1), "r+") as f:  # NaN in an ok row (a real failure mode of fp16 overflow)
        f["cls"][0, 2, 3] = np.nan
        f["embed"][1, 0] = np.inf  # ... and in a failed row, which is not checked
        f.attrs["sha256"] = shard_checksum(f["row"][:], f["cls"][:], f["embed"][:], f["ok"][:],
                                           [e.decode() for e in f["error"][:]])
    (fs.path / "shard-00099.h5").write_bytes(b"")
    rep = fs.verify()
    assert not rep.ok and rep.missing == [3] and rep.nonfinite == [4]
    broken = dict(rep.broken)
    assert "cannot read" in broken[0] and "checksum mismatch" in broken[2] and 1 not in broken
    assert any("unexpected file shard-00099.h5" in why for k, why in rep.broken if k == -1)
    assert rep.failed == [(5, fs.images.paths[5], "OSError: image file is truncated")]


def test_list_feature_sets_newest_first_and_skips_non_sets(tmp_path: Path) -> None:
    import os

    a, _, _ = _full(tmp_path, name="a")
    b = FeatureSet.create(tmp_path / "b", _manifest(model="m2"), _images())
    os.utime(a.path / MANIFEST, (1, 1))
    (tmp_path / "junk").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / MANIFEST).write_text("{not json")
    assert [fs.id for fs in list_feature_sets(tmp_path)] == ["b", "a"]
    assert list_feature_sets(tmp_path / "nope") == []
    with pytest.raises(StoreError, match="not a feature set"):
        FeatureSet.open(tmp_path / "junk")
    with pytest.raises(StoreError, match="unreadable manifest"):
        FeatureSet.open(tmp_path / "bad")
    m = json.loads((b.path / MANIFEST).read_text())
    m["format_version"] = 99
    (b.path / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(StoreError, match="format version 99"):
        FeatureSet.open(b.path)


def test_direct_reads_equal_hdf5_reads_for_any_rows(tmp_path: Path, monkeypatch) -> None:
    """The fast path (plain reads of the raw chunk bytes) against HDF5's own reader, numpy and torch casts."""
    import torch  # noqa: F401  (loaded: the reader casts with torch)

    from attrib import shard_io

    n, W = 7000, 200  # 2621-row chunks: a partial last chunk in every shard
    fs = FeatureSet.create(tmp_path / "fs", _manifest(width=W, shard_size=3000), _images(n))
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((n, L, W)).astype(np.float16)
    for k in range(fs.n_shards):
        a, b = fs.shard_range(k)
        fs.write_shard(k, ref[a:b], ref[a:b, 0, :E], np.ones(b - a, bool), [""] * (b - a))
    rows = rng.choice(n, 2500, replace=False)
    calls = []
    direct = shard_io.read_rows
    monkeypatch.setattr(shard_io, "read_rows", lambda path, *a: calls.append(path.name) or direct(path, *a))
    reads = (lambda: fs.block(1), lambda: fs.block(2, rows), lambda: fs.embed(rows),
             lambda: fs.block(2, rows, dtype="float16"))
    fast = []
    for read in reads:
        calls.clear()
        fast.append(read())
        assert len(calls) >= 3 and set(calls) == {f"shard-0000{k}.h5" for k in range(3)}  # all direct, in pieces
    monkeypatch.setattr(shard_io, "TORCH_CAST", False)  # numpy's cast instead of torch's
    numpy_cast = [read() for read in reads]
    monkeypatch.setattr(shard_io, "direct_region", lambda *a: None)
    slow = [read() for read in reads]
    want = [ref[:, 1].astype(np.float32), ref[rows, 2].astype(np.float32), ref[rows, 0, :E].astype(np.float32),
            ref[rows, 2]]
    for got in (fast, numpy_cast, slow):
        for g, w in zip(got, want):
            assert g.dtype == w.dtype
            np.testing.assert_array_equal(g, w)


def test_shards_with_another_layout_are_read_through_hdf5(tmp_path: Path) -> None:
    """A shard written by another tool (interleaved chunks, gzip) is still a valid shard."""
    fs, cls, emb = _full(tmp_path)
    start, stop = fs.shard_range(0)
    with h5py.File(fs.shard_path(0), "r") as f:
        arrays = {k: f[k][:] for k in ("row", "cls", "embed", "ok", "error")}
        attrs = dict(f.attrs)
    fs.shard_path(0).unlink()
    with h5py.File(fs.shard_path(0), "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v, compression="gzip" if k in ("cls", "embed") else None)
        f.attrs.update(attrs)
    np.testing.assert_array_equal(fs.block(1), cls[:, 1].astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(fs.block(1, dtype="float16"), cls[:, 1].astype(np.float16))
    np.testing.assert_array_equal(fs.embed([3, 0]), emb[[3, 0]].astype(np.float16).astype(np.float32))
    assert fs.verify().ok


def test_stored_values_are_never_rounded_to_float16(tmp_path: Path) -> None:
    """A shard of another tool holding float32 reads as float32; asked for the stored float16, it is refused
    rather than rounded."""
    fs, cls, _ = _full(tmp_path)
    with h5py.File(fs.shard_path(0), "r") as f:
        arrays = {k: f[k][:] for k in ("row", "cls", "embed", "ok", "error")}
        attrs = dict(f.attrs)
    fs.shard_path(0).unlink()
    wide = cls[:len(arrays["cls"])].astype(np.float32) + np.float32(1e-4)  # not a float16 value
    with h5py.File(fs.shard_path(0), "w") as f:
        for k, v in {**arrays, "cls": wide}.items():
            f.create_dataset(k, data=v)
        f.attrs.update(attrs)
    np.testing.assert_array_equal(fs.block(1, [0, 2]), wide[[0, 2], 1])
    with pytest.raises(StoreError, match=r"shard-00000\.h5: 'cls' holds float32 values, which float16 cannot hold "
                                         r"exactly \(attrib writes float16\); read it as float32"):
        fs.block(1, [0, 2], dtype="float16")
    with pytest.raises(ValueError, match="read as float32 or as stored"):
        fs.block(1, [0], dtype="float64")


def test_half_to_float_is_exact_for_every_float16() -> None:
    from attrib.shard_io import half_to_float

    every = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)  # incl. inf, NaN, subnormals
    out = np.empty(every.shape, np.float32)
    half_to_float(every, out)
    ref = every.astype(np.float32)
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(out.view(np.uint32)[finite], ref.view(np.uint32)[finite])  # bit-exact, -0 too
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_array_equal(out[np.isinf(ref)], ref[np.isinf(ref)])


def test_direct_read_of_a_short_file_is_an_error_not_a_crash(tmp_path: Path) -> None:
    from attrib.shard_io import ShortFile, read_rows

    (tmp_path / "short.h5").write_bytes(b"\0" * 1000)
    out = np.zeros((4, 8), np.float32)
    with pytest.raises(ShortFile, match="file ends inside a chunk"):
        read_rows(tmp_path / "short.h5", 960, 4, 8, out, slice(0, 4), None)
    read_rows(tmp_path / "short.h5", 960, 2, 8, out, slice(0, 2), None)  # 32 bytes at 960: inside
    assert not out.any()


def test_importing_the_store_loads_neither_hdf5_nor_torch() -> None:
    """`attrib cache ls` and every --help import the store: HDF5 is loaded by the first shard read or write."""
    import subprocess
    import sys

    code = "import sys, attrib.store; print(sorted(m for m in ('h5py', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
