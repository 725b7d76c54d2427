"""Real processes: a run killed with SIGKILL resumes exactly; two ranks build one feature set together; two
runs started by hand share the shards through claims."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from attrib.cli import main
from attrib.store import FeatureSet

N_IMAGES, SHARD = 240, 8


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """240 JPEG photos-to-be (noise, 192 px, so that decoding takes real time) plus two broken files."""
    root = tmp_path_factory.mktemp("procs")
    for i in range(N_IMAGES - 2):
        d = root / f"gen{i % 4}"
        d.mkdir(exist_ok=True)
        arr = np.random.default_rng(i).integers(0, 256, (192, 192, 3), dtype=np.uint8)
        Image.fromarray(arr).save(d / f"{i:04d}.jpg", quality=90)
    (root / "gen0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (root / "gen1" / "empty.png").write_bytes(b"")
    return root


def _args(root: Path, cache: Path, ckpt: Path) -> list[str]:
    return ["features", "--dataset", "folder", "--root", str(root), "--model", "attrib-tiny", "--pretrained",
            str(ckpt), "--cache", str(cache), "--shard-size", str(SHARD), "--batch-size", "4", "--workers", "0",
            "--quiet"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Same torch threads in this process as in the children (OMP_NUM_THREADS=1): on a shared 2-core box,
    2 OpenMP threads next to other busy processes make tiny-model forwards 100x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _spawn(args: list[str], **env: str) -> subprocess.Popen:
    e = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "OMP_NUM_THREADS": "1", **env}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        if var not in env:
            e.pop(var, None)
    return subprocess.Popen([sys.executable, "-m", "attrib", *args], env=e, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _sigkill_once_shards_exist(proc: subprocess.Popen, folder: Path, pattern: str, at_least: int) -> list[Path]:
    """SIGKILL ``proc`` as soon as ``at_least`` shards matching ``pattern`` exist under ``folder`` (or it
    ended, or two minutes passed); checks that the kill is what ended it and returns the shards seen."""
    shards: list[Path] = []
    deadline = time.monotonic() + 120
    while len(shards) < at_least and proc.poll() is None and time.monotonic() < deadline:
        shards = list(folder.glob(pattern))
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    return shards


@pytest.fixture(scope="module")
def reference(dataset: Path, tiny_checkpoint: Path, tmp_path_factory) -> FeatureSet:
    """The same extraction, uninterrupted, in one process."""
    res = CliRunner().invoke(main, _args(dataset, tmp_path_factory.mktemp("ref"), tiny_checkpoint),
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return FeatureSet.open(res.stdout.strip().splitlines()[-1])


def _assert_same(fs: FeatureSet, ref: FeatureSet) -> None:
    rep = fs.verify()
    assert rep.ok and not rep.missing and not rep.broken, rep
    assert fs.images.paths == ref.images.paths and len(set(fs.images.paths)) == N_IMAGES
    assert [(r, e) for r, _, e in rep.failed] == [(r, e) for r, _, e in ref.verify().failed] and len(rep.failed) == 2
    for layer in range(ref.n_blocks):
        np.testing.assert_array_equal(fs.block(layer), ref.block(layer))
    np.testing.assert_array_equal(fs.embed(), ref.embed())
    assert not list(fs.path.glob(".shard-*"))  # no temporary file left
    assert not list(fs.path.glob("*.claim*"))  # every claim released (or taken over and released)


def test_sigkill_mid_extraction_then_rerun_completes_exactly(dataset: Path, tiny_checkpoint: Path,
                                                             reference: FeatureSet, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    proc = _spawn(_args(dataset, cache, tiny_checkpoint))
    shards = _sigkill_once_shards_exist(proc, cache, "*/shard-*.h5", 2)
    fs = FeatureSet.open(shards[0].parent)
    done = fs.shards_done()
    assert 2 <= len(done) < fs.n_shards, "the run must be killed mid-extraction"

    res = CliRunner().invoke(main, _args(dataset, cache, tiny_checkpoint), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert res.stdout.strip().splitlines()[-1] == str(fs.path)
    left = fs.n_shards - len(done)
    assert f"{left} shards, " in res.stderr and f"done: {N_IMAGES - len(done) * SHARD} images" in res.stderr
    _assert_same(FeatureSet.open(fs.path), reference)


def test_two_ranks_as_two_processes_make_one_complete_feature_set(dataset: Path, tiny_checkpoint: Path,
                                                                  reference: FeatureSet, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    procs = [_spawn(_args(dataset, cache, tiny_checkpoint), RANK=str(r), WORLD_SIZE="2") for r in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    paths = {out.strip().splitlines()[-1] for out, _ in outs}
    assert len(paths) == 1
    n_shards = -(-N_IMAGES // SHARD)
    for r, (_, err) in enumerate(outs):  # rank r did exactly its shards k % 2 == r
        mine = len(range(r, n_shards, 2))
        assert f" {mine} shards, " in err, err
    _assert_same(FeatureSet.open(paths.pop()), reference)


@pytest.mark.slow
def test_two_ranks_under_torchrun_make_the_one_process_feature_set(dataset: Path, tiny_checkpoint: Path,
                                                                    reference: FeatureSet, tmp_path: Path) -> None:
    """The launcher users run on a GPU node: torchrun sets RANK / WORLD_SIZE / LOCAL_RANK for each process."""
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "attrib",
           *_args(dataset, cache, tiny_checkpoint)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    n_shards = -(-N_IMAGES // SHARD)
    for r in range(2):  # each rank did exactly its shards k % 2 == r
        assert f" {len(range(r, n_shards, 2))} shards, " in proc.stderr, proc.stderr[-3000:]
    folders = [p for p in cache.iterdir() if p.is_dir()]
    assert len(folders) == 1
    _assert_same(FeatureSet.open(folders[0]), reference)


def _paused_holding_a_claim(proc: subprocess.Popen, cache: Path) -> list[str]:
    """SIGSTOP ``proc`` at a moment it has published a shard and holds a claim on another; the claims on
    shards not published yet (a published shard's claim may still wait for its release)."""
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if list(cache.glob("*/shard-*.h5")) and list(cache.glob("*/*.claim")):
            proc.send_signal(signal.SIGSTOP)
            held = sorted(p.name for p in cache.glob("*/*.claim") if not p.with_suffix("").exists())
            if held:
                return held
            proc.send_signal(signal.SIGCONT)  # released it just now: try again
        time.sleep(0.002)
    raise AssertionError(f"the first run ended before it could be paused: {proc.communicate()}")


@pytest.mark.slow
def test_two_runs_started_by_hand_extract_each_shard_once(dataset: Path, tiny_checkpoint: Path,
                                                          reference: FeatureSet, tmp_path: Path) -> None:
    """No ranks: the second run skips the shard the first (alive, paused) has claimed, and does the rest."""
    cache = tmp_path / "cache"
    first = _spawn(_args(dataset, cache, tiny_checkpoint))
    held = _paused_holding_a_claim(first, cache)
    try:
        second = _spawn(_args(dataset, cache, tiny_checkpoint))
        out2, err2 = second.communicate(timeout=300)
    finally:
        first.send_signal(signal.SIGCONT)
    out1, err1 = first.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, (err1, err2)
    assert out1.strip().splitlines()[-1] == out2.strip().splitlines()[-1]
    images = [int(re.search(r"done: (\d+) images", err).group(1)) for err in (err1, err2)]
    shards = [int(re.search(r" (\d+) shards, ", err).group(1)) for err in (err1, err2)]
    assert sum(images) == N_IMAGES and min(images) > 0, (images, err1, err2)  # each image extracted once
    assert sum(shards) == -(-N_IMAGES // SHARD) and len(held) <= shards[0]
    assert f"{len(held)} shards left to other processes extracting them" in err2, (held, err2)
    _assert_same(FeatureSet.open(out1.strip().splitlines()[-1]), reference)
