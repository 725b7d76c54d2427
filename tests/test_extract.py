"""The extraction run in-process: rows never go missing, one forward per batch, resume, CLI and cache commands."""

from __future__ import annotations

import io
import json
import os
import socket
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from attrib.cli import main
from attrib.data.catalog import read_folder
from attrib.extract.backbone import load_backbone
from attrib.extract.shards import ShardBatches
from attrib.extract.runner import (ExtractError, RunConfig, dist_from_env, even_subset, extract,
                                   resolve_device, resolve_precision)
from attrib.store import FeatureSet
from test_images import write_zoo


def _cli(args: list[str], code: int = 0):
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == code, res.output
    return res


def _photos(root: Path, n: int, size: int = 40) -> Path:
    for i in range(n):
        d = root / f"gen{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
            d / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return _photos(tmp_path_factory.mktemp("photos"), 10)


@pytest.fixture(scope="module")
def tiny():
    return load_backbone("attrib-tiny", None)


def test_zoo_every_file_is_one_row_ok_or_failed_with_its_error(tmp_path: Path) -> None:
    expect = write_zoo(tmp_path / "data" / "zoo")
    Image.new("RGB", (1, 30_000)).save(tmp_path / "data" / "zoo" / "sliver.png")  # tiny file, huge once resized
    expect["sliver.png"] = "aspect ratio too extreme (1x30000)"
    res = _cli(["features", "--dataset", "folder", "--root", str(tmp_path / "data"), "--model", "attrib-tiny",
                "--pretrained", "random-init", "--cache", str(tmp_path / "cache"), "--workers", "1",
                "--shard-size", "4", "--batch-size", "3", "--quiet"])
    fs = FeatureSet.open(res.stdout.strip().splitlines()[-1])
    n_bad = sum(1 for e in expect.values() if e)
    assert f"done: {len(expect)} images ({n_bad} failed)" in res.stderr
    assert fs.complete and sorted(fs.images.paths) == sorted(f"zoo/{k}" for k in expect)
    ok, errors = fs.status()
    cls = np.stack([fs.block(i) for i in range(fs.n_blocks)], axis=1)
    for row, path in enumerate(fs.images.paths):
        want = expect[path.split("/", 1)[1]]
        assert ok[row] == (want == ""), (path, errors[row])
        if want:
            assert want.lower() in errors[row].lower(), (path, errors[row])
            assert not cls[row].any() and not fs.embed([row]).any()
        else:
            assert errors[row] == "" and np.isfinite(cls[row]).all() and np.abs(cls[row]).sum() > 0
    out = _cli(["cache", "verify", str(fs.path)]).output
    assert f"{n_bad} images failed to decode" in out and "OK" in out
    assert "zoo/zero.png: empty file (0 bytes)" in out


def test_one_forward_per_batch_and_only_cls_tokens_are_kept(photos: Path, tiny, tmp_path: Path) -> None:
    images = read_folder(photos)
    forwards, block_calls = [], []
    h1 = tiny.module.register_forward_hook(lambda m, i, o: forwards.append(i[0].shape[0]))
    h2 = tiny.blocks[0].register_forward_hook(lambda *a: block_calls.append(1))
    try:
        s = extract(images, tiny, tmp_path, "photos", config=RunConfig(batch_size=3, shard_size=4, workers=0,
                                                                         progress=False))
    finally:
        h1.remove()
        h2.remove()
    assert forwards == [3, 1, 3, 1, 2] and len(block_calls) == 5  # batches never cross shards (4, 4, 2)
    assert (s.images, s.failed, s.shards_written, s.shards_left) == (10, 0, 3, 0)
    assert s.bytes_written == s.feature_set.nbytes() > 0 and s.images_per_s > 0
    with h5py.File(s.feature_set.shard_path(0)) as f:
        assert sorted(f) == ["cls", "embed", "error", "ok", "row"]  # no patch tokens stored
        assert f["cls"].shape == (4, tiny.n_blocks, tiny.width)
    x = torch.stack([tiny.transform(Image.open(photos / p).convert("RGB")) for p in images.paths[:4]])
    ref_cls, ref_emb = tiny.features(x)
    np.testing.assert_array_equal(s.feature_set.block(2, [0, 1, 2, 3]), ref_cls[:, 2].half().float().numpy())
    np.testing.assert_array_equal(s.feature_set.embed([0, 1, 2, 3]), ref_emb.half().float().numpy())


def test_rerun_writes_only_missing_shards_identically(photos: Path, tiny, tmp_path: Path) -> None:
    images = read_folder(photos)
    cfg = RunConfig(batch_size=4, shard_size=4, workers=0, progress=False)
    fs = extract(images, tiny, tmp_path, "photos", config=cfg).feature_set
    before = fs.shard_path(1).read_bytes()
    again = extract(images, tiny, tmp_path, "photos", config=RunConfig(batch_size=4, workers=0, progress=False))
    assert (again.images, again.shards_written) == (0, 0)  # adopts the cached shard size, nothing to do
    fs.shard_path(1).unlink()
    (fs.path / f".shard-00001.h5.tmp-{socket.gethostname()}-999999999-deadbeef").write_bytes(b"x")  # dead pid
    (fs.path / f".manifest.json.tmp-{socket.gethostname()}-999999999-deadbeef").write_bytes(b"x")
    (fs.path / ".shard-00002.h5.tmp-otherhost-1-cafecafe").write_bytes(b"x")  # another machine's: kept
    resumed = extract(images, tiny, tmp_path, "photos", config=RunConfig(batch_size=4, workers=0, progress=False))
    assert (resumed.images, resumed.shards_written, resumed.shards_left) == (4, 1, 0)
    with h5py.File(fs.shard_path(1)) as f, h5py.File(io.BytesIO(before)) as g:
        for name in ("row", "cls", "embed", "ok", "error"):
            np.testing.assert_array_equal(f[name][:], g[name][:])
    assert sorted(p.name for p in fs.path.glob(".*")) == [".shard-00002.h5.tmp-otherhost-1-cafecafe"]


def test_sampler_skips_shards_another_process_finished_meanwhile(photos: Path, tiny, tmp_path: Path) -> None:
    images = read_folder(photos)
    fs = extract(images, tiny, tmp_path, "photos", config=RunConfig(shard_size=4, workers=0, progress=False)
                 ).feature_set
    fs.shard_path(1).unlink()
    fs.shard_path(2).unlink()
    sampler = ShardBatches(fs, [1, 2], batch_size=2)
    assert len(sampler) == 3
    it = iter(sampler)
    assert next(it) == [4, 5]
    other = FeatureSet.open(fs.path)  # meanwhile another process finishes shard 2
    other.write_shard(2, np.zeros((2, fs.n_blocks, fs.width)), np.zeros((2, fs.embed_dim)), np.ones(2, bool),
                      ["", ""])
    assert list(it) == [[6, 7]] and sampler.skipped == [2]


def test_run_options_are_validated_with_clear_errors(photos: Path, tiny, tmp_path: Path, monkeypatch) -> None:
    images = read_folder(photos)
    with pytest.raises(ExtractError, match=r"--rank 2 must be in \[0, --world-size 2\)"):
        extract(images, tiny, tmp_path, "p", config=RunConfig(rank=2, world_size=2))
    if not torch.cuda.is_available():
        with pytest.raises(ExtractError, match="no CUDA device.*--device cpu"):
            resolve_device("cuda")
    with pytest.raises(ExtractError, match="use auto, cpu, cuda or cuda:N"):
        resolve_device("tpu")
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    with pytest.raises(ExtractError, match="--precision 'fp8'"):
        resolve_precision("fp8", torch.device("cpu"))
    # a resume (or a new part of a grown set) with --precision auto keeps the set's precision when that
    # is fp32 or the device is a GPU; a precision given explicitly stands (the manifest check refuses it)
    from attrib.extract.runner import _adopt_precision

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert [_adopt_precision("auto", "fp32", cpu), _adopt_precision("auto", "bf16", cpu),
            _adopt_precision("auto", "bf16", gpu), _adopt_precision("fp16", "fp32", gpu),
            _adopt_precision("auto", None, gpu)] == ["fp32", "auto", "bf16", "fp16", "auto"]
    with pytest.raises(ExtractError, match="--limit must be positive"):
        even_subset(images, 0)
    sub = even_subset(images, 4)
    assert len(sub) == 4 and {s for s in sub.sources} == {"gen0", "gen1", "gen2"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"):
        monkeypatch.delenv(var, raising=False)
    assert dist_from_env() == (0, 1, None)
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    assert dist_from_env() == (3, 4, 1)
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "5")
    assert dist_from_env() == (5, 8, 5)  # torchrun's variables win over SLURM's


@pytest.mark.parametrize("env, message", [
    ({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc' must be an integer >= 1"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE='0' must be an integer >= 1"),
    ({"WORLD_SIZE": "4", "RANK": "-1"}, "RANK='-1' must be an integer >= 0"),
    ({"WORLD_SIZE": "4", "RANK": "4"}, r"RANK=4 is not below WORLD_SIZE=4: ranks run from 0 to 3"),
    ({"WORLD_SIZE": "4", "RANK": "1", "LOCAL_RANK": "x"}, "LOCAL_RANK='x' must be an integer >= 0"),
    ({"SLURM_NTASKS": "2", "SLURM_PROCID": "2.5"}, "SLURM_PROCID='2.5' must be an integer >= 0"),
    ({"SLURM_NTASKS": "2", "SLURM_PROCID": "3"}, "SLURM_PROCID=3 is not below SLURM_NTASKS=2"),
])
def test_bad_launcher_variables_name_the_variable(env: dict[str, str], message: str, monkeypatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(ExtractError, match=rf"environment variable {message}.*--rank and --world-size"):
        dist_from_env()


def test_the_cli_reports_a_bad_launcher_variable_and_explicit_ranks_override_it(photos: Path, tmp_path: Path,
                                                                                 monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "abc")
    base = ["features", "--dataset", "folder", "--root", str(photos), "--model", "attrib-tiny", "--workers", "0",
            "--quiet", "--out", str(tmp_path / "fs")]
    res = _cli(base, code=2)
    assert "Error: environment variable WORLD_SIZE='abc'" in res.output and "Traceback" not in res.output
    _cli(base + ["--rank", "0", "--world-size", "1"])


def test_shards_another_process_published_first_are_not_counted(photos: Path, tiny, tmp_path: Path,
                                                                 monkeypatch) -> None:
    """Two identical runs overlap: while this one computes shard 0, the other publishes it. Its summary
    counts only the shards (and bytes) it published itself; the other's shard is left as it was."""
    images = read_folder(photos)
    out = tmp_path / "fs"
    transform = tiny.transform

    def other_process_finishes_shard_0(img):
        other = FeatureSet.open(out)
        if not other.shard_path(0).exists():
            other.write_shard(0, np.zeros((4, other.n_blocks, other.width)), np.zeros((4, other.embed_dim)),
                              np.zeros(4, bool), ["other"] * 4)
        return transform(img)

    monkeypatch.setattr(tiny, "transform", other_process_finishes_shard_0)
    s = extract(images, tiny, tmp_path, "photos", out=out,
                config=RunConfig(batch_size=4, shard_size=4, workers=0, progress=False))
    assert (s.images, s.shards_written, s.shards_left) == (10, 2, 0)  # computed 3 shards, published 2
    fs = s.feature_set
    assert s.bytes_written == fs.shard_path(1).stat().st_size + fs.shard_path(2).stat().st_size
    assert " 2 shards, " in str(s)
    ok, errors = fs.status()
    assert list(errors[:4]) == ["other"] * 4 and ok[4:].all()  # the first publisher's shard was kept


def test_cli_progress_summary_and_manifest_mismatch(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "fs"
    base = ["features", "--dataset", "folder", "--root", str(photos), "--model", "attrib-tiny", "--workers", "0",
            "--out", str(out)]
    res = _cli(base + ["--shard-size", "4"])
    assert "img/s" in res.stderr and "failed=0" in res.stderr and "10/10" in res.stderr  # the progress bar
    summary = [ln for ln in res.stderr.splitlines() if ln.startswith("done: ")][0]
    assert summary.startswith("done: 10 images (0 failed) in ") and " img/s; 3 shards, " in summary
    assert summary.endswith(" MB written") and res.stdout.strip().splitlines()[-1] == str(out)
    assert "random weights" in res.stderr  # the random-init banner
    bad = _cli(base + ["--shard-size", "5", "--view", "jpeg:90", "--quiet"], code=2)
    assert "extracted with different settings" in bad.output
    assert "view: cache has 'none', this run has 'jpeg:90'" in bad.output
    assert "shard_size: cache has 4, this run has 5" in bad.output
    assert "model:" not in bad.output
    bad = _cli(base + ["--rank", "1", "--quiet"], code=2)
    assert "--rank 1 must be in [0, --world-size 1)" in bad.output
    bad = _cli(base + ["--view", "sepia:1", "--quiet"], code=2)
    assert "'sepia:1' is not a view" in bad.output


def test_cache_ls_info_verify(photos: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    res = _cli(["features", "--dataset", "folder", "--root", str(photos), "--model", "attrib-tiny", "--workers",
                "0", "--cache", str(cache), "--shard-size", "4", "--limit", "8", "--quiet"])
    fs = FeatureSet.open(res.stdout.strip().splitlines()[-1])
    assert fs.n_images == 8 and fs.manifest.limit == 8
    ls = _cli(["cache", "ls", str(cache)]).output
    assert f"{fs.path}  8 images  4x64  complete  [random-init" in ls
    info = _cli(["cache", "info", str(fs.path)]).output
    assert "WARNING: random-init" in info and '"model": "attrib-tiny"' in info
    assert "shards: 2/2 complete" in info and "gen0" in info
    assert _cli(["cache", "verify", str(fs.path)]).output.rstrip().endswith("OK")

    with h5py.File(fs.shard_path(1), "r+") as f:
        f["cls"][0, 1, 2] = np.float16(np.nan)
    fs.shard_path(0).unlink()
    ls = _cli(["cache", "ls", str(cache)]).output
    assert "1/2 shards" in ls
    bad = _cli(["cache", "verify", str(fs.path)], code=1).output
    assert "MISSING shard 0 (shard-00000.h5)" in bad and "BROKEN shard 1: checksum mismatch" in bad
    assert "Error: verification failed" in bad
    assert _cli(["cache", "ls", str(tmp_path / "empty")]).output.startswith("no feature sets in")
    assert "is not a feature set" in _cli(["cache", "info", str(tmp_path)], code=2).output
    json.loads((fs.path / "manifest.json").read_text())
    assert not [p for p in os.listdir(fs.path) if p.startswith(".")]
