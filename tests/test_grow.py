"""Growing feature sets: a dataset that gains (or loses) files is extended, not re-extracted.

Real folders of PNG files, the real tiny model from a checkpoint, real HDF5 parts and index files. Batches
of one image make every extraction bit-for-bit comparable with any other (a forward pass over a batch may
round an image's features differently from one over another batch).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from attrib.cli import main
from attrib.data.catalog import read_folder
from attrib.grow import Extension
from attrib.parts import PARTS, GrownFeatureSet, index_generations, index_path, part_path
from attrib.store import MANIFEST, FeatureSet, ShardDamaged, StoreError

SHARD = 8


def _png(path: Path, seed: int, size: int = 40) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def _generator(root: Path, name: str, n: int, seed: int) -> list[str]:
    for i in range(n):
        _png(root / name / f"{i:03d}.png", seed + i)
    return [f"{name}/{i:03d}.png" for i in range(n)]


def _features(root: Path, cache: Path, ckpt: Path, *extra: str, code: int = 0):
    res = CliRunner().invoke(main, ["features", "--dataset", "folder", "--root", str(root), "--model", "attrib-tiny",
                                    "--pretrained", str(ckpt), "--cache", str(cache), "--shard-size", str(SHARD),
                                    "--batch-size", "1", "--workers", "0", "--quiet", *extra])
    assert res.exit_code == code, res.output
    return res


def _folder(res) -> Path:
    return Path(res.stdout.strip().splitlines()[-1])


def _by_path(fs: FeatureSet, paths: list[str]) -> dict[str, np.ndarray]:
    """Every block and the embedding of ``paths``, as one vector per path (the features readers see)."""
    rows = fs.rows(paths)
    flat = np.concatenate([fs.block(b, rows) for b in range(fs.n_blocks)] + [fs.embed(rows)], axis=1)
    return dict(zip(paths, flat))


def _assert_same_as(fs: FeatureSet, ref: FeatureSet) -> None:
    """``fs`` reads exactly as ``ref``: the same image list and the same features, row by row."""
    assert fs.images.paths == ref.images.paths and fs.images.sources == ref.images.sources
    assert fs.manifest.images_sha256 == ref.manifest.images_sha256 and fs.n_images == ref.n_images
    for b in range(ref.n_blocks):
        np.testing.assert_array_equal(fs.block(b), ref.block(b))
    np.testing.assert_array_equal(fs.embed(), ref.embed())
    assert [list(x) for x in fs.status()] == [list(x) for x in ref.status()]


@pytest.fixture()
def grown(tmp_path: Path, tiny_checkpoint: Path):
    """A folder dataset of three generators, extracted; then a fourth generator folder arrives."""
    root, cache = tmp_path / "data", tmp_path / "cache"
    old = _generator(root, "gen0", 10, 0) + _generator(root, "gen1", 10, 100) + _generator(root, "gen2", 10, 200)
    first = _folder(_features(root, cache, tiny_checkpoint))
    before = FeatureSet.open(first)
    features_before = _by_path(before, old)
    manifest_bytes = (first / MANIFEST).read_bytes()
    new = _generator(root, "gen3", 7, 300)
    return root, cache, first, old, new, features_before, manifest_bytes


def test_a_new_generator_folder_extracts_only_its_images(grown, tiny_checkpoint: Path, tmp_path: Path) -> None:
    root, cache, first, old, new, features_before, manifest_bytes = grown
    res = _features(root, cache, tiny_checkpoint)
    assert "done: 7 images (0 failed)" in res.stderr  # only the new generator's images went through the model
    assert "7 of 37 images are new" in res.stderr and "parts/" in res.stderr
    assert _folder(res) == first  # the same feature set, grown in place: same folder, same name
    fs = FeatureSet.open(first)
    assert isinstance(fs, GrownFeatureSet) and fs.complete and fs.n_images == 37
    assert fs.images.paths == sorted(old + new) == read_folder(root).paths  # one list, sorted by path
    assert fs.manifest.images_sha256 == read_folder(root).sha256() and fs.generation == 1
    # the old images' features are the very ones extracted before; nothing of the first part changed
    after = _by_path(fs, old)
    for p in old:
        np.testing.assert_array_equal(after[p], features_before[p])
    assert (first / MANIFEST).read_bytes() == manifest_bytes
    assert FeatureSet.open(first, whole=False).n_images == 30
    # the union reads exactly as a full extraction of the grown dataset into an empty cache
    full = FeatureSet.open(_folder(_features(root, tmp_path / "fresh", tiny_checkpoint)))
    assert not isinstance(full, GrownFeatureSet) and full.n_images == 37
    _assert_same_as(fs, full)
    rows = [36, 0, 31, 5, 30, 30]  # any order, repeats, across parts
    np.testing.assert_array_equal(fs.block(2, rows), full.block(2, rows))
    # the new part is an ordinary feature set that any HDF5 tool reads
    (part,) = [p for p in (first / PARTS).iterdir() if p.is_dir()]
    plain = FeatureSet.open(part)
    assert plain.n_images == 7 and plain.images.paths == new and plain.verify().ok
    with h5py.File(part / "shard-00000.h5") as f:
        np.testing.assert_array_equal(f["cls"][:, 1, :].astype(np.float32), fs.block(1, fs.rows(new)))
    # rerunning the same command finds nothing to do and publishes nothing
    again = _features(root, cache, tiny_checkpoint)
    assert "already complete" in again.stderr and "nothing to extract" in again.stderr
    assert index_generations(first) == [1]


def test_removed_files_leave_the_union_with_a_note_and_come_back_free(grown, tiny_checkpoint: Path) -> None:
    root, cache, first, old, new, features_before, _ = grown
    _features(root, cache, tiny_checkpoint)
    gone = root / "gen1" / "003.png"
    kept = gone.read_bytes()
    gone.unlink()
    res = _features(root, cache, tiny_checkpoint)
    assert "nothing to extract" in res.stderr
    assert "1 image no longer in the dataset: left the union" in res.stderr and "gen1/003.png" in res.stderr
    fs = FeatureSet.open(first)
    assert fs.n_images == 36 and "gen1/003.png" not in fs.images.paths and fs.generation == 2
    assert fs.images.paths == read_folder(root).paths
    rep = fs.verify()
    assert rep.ok and any("1 image of the parts not in the union" in n for n in rep.notes)
    with pytest.raises(KeyError, match="gen1/003.png"):
        fs.rows(["gen1/003.png"])
    # the file comes back: its features were never deleted, so nothing is extracted
    gone.write_bytes(kept)
    res = _features(root, cache, tiny_checkpoint)
    assert "nothing to extract" in res.stderr
    fs = FeatureSet.open(first)
    assert fs.n_images == 37 and fs.generation == 3
    np.testing.assert_array_equal(_by_path(fs, ["gen1/003.png"])["gen1/003.png"], features_before["gen1/003.png"])
    assert index_generations(first) == [2, 3]  # older generations are removed, the last two kept


def test_cache_ls_info_verify_and_find_understand_a_grown_set(grown, tiny_checkpoint: Path) -> None:
    root, cache, first, *_ = grown
    (root / "gen0" / "004.png").unlink()
    _features(root, cache, tiny_checkpoint)
    cli = CliRunner()
    ls = cli.invoke(main, ["cache", "ls", str(cache)]).output
    assert f"{first}  36 images (grown: 2 parts)" in ls and "complete" in ls
    info = cli.invoke(main, ["cache", "info", str(first)]).output
    assert '"n_images": 36' in info and "grown: 2 parts, index parts/index-000001.tsv" in info
    assert "part .  30 images (29 in the union)" in info and "7 images (7 in the union)" in info
    assert "gen3                         all    7" in info
    ok = cli.invoke(main, ["cache", "verify", str(first)])
    assert ok.exit_code == 0 and "36 images in 5 shards" in ok.output and ok.output.rstrip().endswith("OK")
    found = cli.invoke(main, ["cache", "find", "--cache", str(cache), "--dataset", "folder", "--model",
                              "attrib-tiny"])
    assert found.output.strip() == str(first)
    # verify checks the index against its parts and every part: a row naming another image ...
    index = index_path(first, 1)
    text = index.read_text()
    line = next(x for x in text.splitlines() if "\tgen2/005.png\t" in x)
    index.write_text(text.replace(line, line[:line.rindex("\t")] + "\t0"))  # points at gen0/000.png
    bad = cli.invoke(main, ["cache", "verify", str(first)])
    assert bad.exit_code == 1 and "1 rows name another image than their part holds" in bad.output
    index.write_text(text)
    # ... and a shard of a part that is gone
    part = next(p for p in (first / PARTS).iterdir() if p.is_dir())
    (part / "shard-00000.h5").rename(part / "moved.h5")
    bad = cli.invoke(main, ["cache", "verify", str(first)])
    assert bad.exit_code == 1 and f"part parts/{part.name}: shard 0 (shard-00000.h5) missing" in bad.output
    with pytest.raises(StoreError, match="incomplete"):
        FeatureSet.open(first).block(0)
    # ... or damaged: named by its part, with the fix
    (part / "moved.h5").rename(part / "shard-00000.h5")
    whole = (part / "shard-00000.h5").read_bytes()
    (part / "shard-00000.h5").write_bytes(b"")
    with pytest.raises(ShardDamaged, match=rf"{part.name}: 1 of \d+ shards damaged \(shard-00000.h5: zero bytes\)"):
        FeatureSet.open(first).require_complete()
    (part / "shard-00000.h5").write_bytes(whole)
    (part / "shard-00000.h5").rename(part / "moved.h5")  # as it was


def test_an_interrupted_part_is_finished_even_if_the_dataset_changed_again(grown, tiny_checkpoint: Path,
                                                                             tmp_path: Path) -> None:
    """A killed extension leaves a part without all its shards and no new index: readers still see the
    old union; the next run (with yet another file) finishes that part instead of redoing it."""
    root, cache, first, old, new, _, _ = grown
    new += _generator(root, "gen4", 5, 400)  # 12 new images: two shards
    fs = FeatureSet.open(first)
    ext = Extension(first, read_folder(root))
    ((images, part, is_new),) = ext.plan()
    assert is_new and images.paths == new
    from attrib.extract.backbone import load_backbone
    from attrib.extract.runner import RunConfig, extract_shards

    backbone = load_backbone("attrib-tiny", str(tiny_checkpoint))
    cfg = RunConfig(batch_size=1, workers=0, shard_size=SHARD, progress=False, rank=0, world_size=2)
    summary = extract_shards(images, backbone, cache, "data", config=cfg, out=part,
                             manifest_extra={"dataset_kind": "folder"})
    assert summary.shards_written == 1 and summary.shards_left == 1  # as if killed after one shard
    assert not isinstance(FeatureSet.open(first), GrownFeatureSet)  # no index yet: the old set, intact
    assert FeatureSet.open(first).n_images == fs.n_images == 30
    _png(root / "gen0" / "999.png", 999)
    res = _features(root, cache, tiny_checkpoint)
    assert "done: 5 images" in res.stderr  # the other shard of the part (4 images) and the one new file
    assert f"finishing interrupted part(s) parts/{part.name}" in res.stderr
    full = FeatureSet.open(_folder(_features(root, tmp_path / "fresh", tiny_checkpoint)))
    _assert_same_as(FeatureSet.open(first), full)
    assert len([p for p in (first / PARTS).iterdir() if p.is_dir()]) == 2


def test_extensions_racing_to_publish_lose_nothing(grown, tiny_checkpoint: Path) -> None:
    """Two extensions planned on the same generation with different lists: the one that publishes second
    finds its generation taken, assigns again against the winner and publishes the next one."""
    root, cache, first, old, new, _, _ = grown
    _features(root, cache, tiny_checkpoint)  # generation 1: gen0..gen3
    now = read_folder(root)
    list_a = now.take(range(1, len(now)))  # A saw gen0/000.png gone
    _generator(root, "gen4", 3, 400)
    list_b = read_folder(root)  # B saw gen4 arrive
    a, b = Extension(first, list_a), Extension(first, list_b)
    assert a.plan() == []  # A only removes a file
    b_targets = b.plan()
    assert [len(t[0]) for t in b_targets] == [3]
    from attrib.extract.backbone import load_backbone
    from attrib.extract.runner import RunConfig, extract_shards

    cfg = RunConfig(batch_size=1, workers=0, shard_size=SHARD, progress=False)
    extract_shards(b_targets[0][0], load_backbone("attrib-tiny", str(tiny_checkpoint)), cache, "data",
                   config=cfg, out=b_targets[0][1], manifest_extra={"dataset_kind": "folder"})
    assert a.publish() and FeatureSet.open(first).generation == 2  # A first: generation 2 is A's list
    assert FeatureSet.open(first).images.paths == list_a.paths
    assert b.publish()  # B finds generation 2 taken and publishes 3
    fs = FeatureSet.open(first)
    assert fs.generation == 3 and fs.images.paths == list_b.paths and fs.complete and fs.verify().ok
    assert len(fs.parts) == 3 and fs.rows(["gen4/000.png", "gen0/000.png"]).size == 2


def test_only_the_same_dataset_grows(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """Another root, a --limit trial, another --max-per-source: each is its own feature set, as before."""
    root, cache = tmp_path / "data", tmp_path / "cache"
    _generator(root, "gen0", 6, 0)
    first = _folder(_features(root, cache, tiny_checkpoint))
    other = tmp_path / "other" / "data"  # same folder name, other place: another dataset
    shutil.copytree(root, other)
    _generator(other, "elsewhere", 2, 50)
    res = _features(other, cache, tiny_checkpoint)
    assert _folder(res) != first and "done: 8 images" in res.stderr
    _generator(root, "gen1", 2, 50)
    trial = _features(root, cache, tiny_checkpoint, "--limit", "4")
    assert _folder(trial) != first and "done: 4 images" in trial.stderr
    assert not isinstance(FeatureSet.open(first), GrownFeatureSet)
    grown = _features(root, cache, tiny_checkpoint)
    assert _folder(grown) == first and "done: 2 images" in grown.stderr
    # a new part must be extracted as its set was: another precision is refused, naming the field
    _generator(root, "gen2", 1, 70)
    bad = _features(root, cache, tiny_checkpoint, "--precision", "bf16", code=2)
    assert "was extracted with different settings" in bad.output and "precision: cache has 'fp32'" in bad.output
    assert FeatureSet.open(first).n_images == 8 and not list((first / PARTS).glob("*/" + MANIFEST))[1:]


@pytest.mark.slow
def test_a_study_over_a_grown_demo_equals_the_study_over_a_full_extraction(demo_root: Path, tiny_checkpoint: Path,
                                                                          tmp_path: Path) -> None:
    """`attrib probe` reads the union: the demo extracted without one generator, grown by it, gives the
    very results of the demo extracted whole."""
    root = tmp_path / "demo"
    shutil.copytree(demo_root, root)
    held_out = tmp_path / "fractal"
    shutil.move(root / "fractal", held_out)

    def features(cache: Path) -> Path:
        res = CliRunner().invoke(main, ["features", "--dataset", "demo", "--root", str(root), "--model",
                                        "attrib-tiny", "--pretrained", str(tiny_checkpoint), "--cache", str(cache),
                                        "--shard-size", "50", "--workers", "0", "--quiet"])
        assert res.exit_code == 0, res.output
        return _folder(res)

    first = features(tmp_path / "cache")
    shutil.move(held_out, root / "fractal")
    assert features(tmp_path / "cache") == first
    fs, full = FeatureSet.open(first), FeatureSet.open(features(tmp_path / "fresh"))
    assert isinstance(fs, GrownFeatureSet) and fs.n_images == full.n_images == 24 * 8
    assert part_path(first, fs.part_names[1]).parent.name == PARTS
    results = []
    for name, path in (("grown", first), ("full", full.path)):
        out = tmp_path / f"results-{name}"
        res = CliRunner().invoke(main, ["probe", "--features", str(path), "--splits", "1", "--layers", "2-3",
                                        "--grid", "C=0.1,1", "--out", str(out), "--quiet"])
        assert res.exit_code == 0, res.output
        results.append([{k: v for k, v in json.loads(line).items() if k not in (
                            "feature_set", "features", "eval_features", "seconds")}  # folder names differ
                        for line in (out / "results.jsonl").read_text().splitlines()])
    assert len(results[0]) == 2 and results[0] == results[1]


# ------------------------------------------------------------------------- real processes, killed and racing
def _photos(root: Path, name: str, n: int, seed: int) -> None:
    """JPEG noise photos of 192 px, so that decoding takes real time (as in test_extract_processes)."""
    (root / name).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        arr = np.random.default_rng(seed + i).integers(0, 256, (192, 192, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / name / f"{i:03d}.jpg", quality=90)


def _cli_args(root: Path, cache: Path, ckpt: Path) -> list[str]:
    return ["features", "--dataset", "folder", "--root", str(root), "--model", "attrib-tiny", "--pretrained", str(ckpt),
            "--cache", str(cache), "--shard-size", str(SHARD), "--batch-size", "1", "--workers", "0", "--quiet"]


@pytest.fixture()
def photo_set(tmp_path: Path, tiny_checkpoint: Path):
    """30 photos extracted; then 40 more arrive in two new generator folders (five shards). Also the
    reference: the grown dataset extracted whole into an empty cache."""
    root, cache = tmp_path / "photos", tmp_path / "cache"
    _photos(root, "gen0", 15, 0)
    _photos(root, "gen1", 15, 100)
    first = _folder(_features(root, cache, tiny_checkpoint))
    _photos(root, "gen2", 20, 200)
    _photos(root, "gen3", 20, 300)
    ref = FeatureSet.open(_folder(_features(root, tmp_path / "ref", tiny_checkpoint)))
    return root, cache, first, ref


@pytest.mark.slow
def test_sigkill_during_an_extension_then_rerun_gives_the_complete_union(photo_set, tiny_checkpoint: Path) -> None:
    from test_extract_processes import _sigkill_once_shards_exist, _spawn

    root, cache, first, ref = photo_set
    proc = _spawn(_cli_args(root, cache, tiny_checkpoint))
    shards = _sigkill_once_shards_exist(proc, first, f"{PARTS}/*/shard-*.h5", 1)
    part = FeatureSet.open(shards[0].parent)
    done = part.shards_done()
    assert 1 <= len(done) < part.n_shards == 5, "the extension must be killed midway"
    # readers still see the feature set as it was: no index was published, the first part is intact
    fs = FeatureSet.open(first)
    assert not isinstance(fs, GrownFeatureSet) and fs.n_images == 30 and fs.verify().ok
    np.testing.assert_array_equal(fs.block(3), ref.block(3, ref.rows(fs.images.paths)))

    res = _features(root, cache, tiny_checkpoint)
    assert _folder(res) == first and f"done: {40 - len(done) * SHARD} images" in res.stderr
    grown = FeatureSet.open(first)
    assert isinstance(grown, GrownFeatureSet) and grown.verify().ok and len(grown.parts) == 2
    _assert_same_as(grown, ref)
    assert not list(first.rglob(".*.tmp-*"))  # no temporary file left


@pytest.mark.slow
def test_two_identical_extensions_at_once_make_one_part_and_one_union(photo_set, tiny_checkpoint: Path) -> None:
    from test_extract_processes import _spawn

    root, cache, first, ref = photo_set
    procs = [_spawn(_cli_args(root, cache, tiny_checkpoint)) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    assert {out.strip().splitlines()[-1] for out, _ in outs} == {str(first)}
    written = 0
    for _, err in outs:
        m = re.search(r"img/s; (\d+) shards, ", err)
        if m is None:  # it started once the other had published everything
            assert "already complete" in err or "nothing to" in err, err
        written += int(m.group(1)) if m else 0
    assert 5 <= written <= 10  # every new shard by one of them at least (both, when they start together)
    assert len([p for p in (first / PARTS).iterdir() if p.is_dir()]) == 1 and index_generations(first) == [1]
    grown = FeatureSet.open(first)
    assert grown.verify().ok
    _assert_same_as(grown, ref)


def test_a_set_made_with_out_grows_in_place(tmp_path: Path, tiny_checkpoint: Path) -> None:
    root, out = tmp_path / "data", tmp_path / "features" / "mine"
    _generator(root, "gen0", 5, 0)
    assert _folder(_features(root, tmp_path / "cache", tiny_checkpoint, "--out", str(out))) == out
    _generator(root, "gen1", 3, 50)
    res = _features(root, tmp_path / "cache", tiny_checkpoint, "--out", str(out))
    assert _folder(res) == out and "done: 3 images" in res.stderr
    fs = FeatureSet.open(out)
    assert fs.n_images == 8 and fs.images.paths == read_folder(root).paths and fs.verify().ok
    assert not (tmp_path / "cache").exists()  # --out names the folder: nothing else is looked at or made
