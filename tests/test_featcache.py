"""The study's feature cache, read in the background: a job waits for its own block only, blocks are read
in the order asked, a failed read reaches every waiting job with its cause, and leaving the study stops
the reading and removes the folder. Also: the process that plans a study never loads torch."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from attrib.probe.featcache import FAILED, FeatureCache, feature_cache
from attrib.probe.options import StudyError
from attrib.store import FeatureSet

from synthetic_features import make_feature_set


@pytest.fixture(scope="module")
def fs(tmp_path_factory) -> FeatureSet:
    return make_feature_set(tmp_path_factory.mktemp("synthetic"))


class Recording:
    """A feature set's ``block`` reads, recorded (and slowed down, or made to fail, when asked)."""

    def __init__(self, fs: FeatureSet, delay: float = 0.0, fail_on: int | None = None):
        self.fs, self.delay, self.fail_on = fs, delay, fail_on
        self.width = fs.width
        self.read: list[int] = []

    def block(self, layer: int, rows: np.ndarray, dtype: str = "float32") -> np.ndarray:
        time.sleep(self.delay)
        if layer == self.fail_on:
            raise OSError(f"shard-00001.h5: block {layer} is truncated; run `attrib cache verify`")
        self.read.append(layer)
        return self.fs.block(layer, rows, dtype)


def test_blocks_are_read_in_the_order_given_and_equal_the_feature_set(fs: FeatureSet, tmp_path: Path,
                                                                       monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where feature caches go
    rows = np.array([7, 1, 200, 40])
    src = Recording(fs)
    with feature_cache(src, rows, [2, 0, 1, 2]) as cache:
        one, two = cache.take((1,), rows[:3]), cache.take((2, 0), rows)
        assert one.dtype == two.dtype == np.float32
        np.testing.assert_array_equal(one, fs.block(1, rows[:3]))
        np.testing.assert_array_equal(two, np.hstack([fs.block(2, rows), fs.block(0, rows)]))
        kept = np.load(cache.paths[0], mmap_mode="r")
        assert isinstance(kept, np.memmap) and kept.dtype == np.float16  # the shards' own values, half the bytes
        folder = cache.folder
    assert src.read == [2, 0, 1]
    assert not Path(folder).exists()


def test_blocks_are_written_and_taken_in_pieces(fs: FeatureSet, tmp_path: Path, monkeypatch) -> None:
    """A full-data block is read, written and cast a few rows at a time: the pieces add up to the block."""
    import attrib.probe.featcache as featcache

    monkeypatch.setattr(featcache, "WRITE_ROWS", 7)
    monkeypatch.setattr(featcache, "TAKE_ROWS", 5)
    src = Recording(fs)
    rows = np.random.default_rng(0).permutation(fs.n_images)[:50]
    cache = FeatureCache.planned(tmp_path, rows, [1, 2])
    for b in (1, 2):
        cache.write_block(src, b)
    assert src.read == [1] * 8 + [2] * 8  # 50 rows, 7 at a time
    np.testing.assert_array_equal(np.load(cache.paths[2]), fs.block(2, np.sort(rows), dtype="float16"))
    both = np.hstack([fs.block(2, rows[::-1]), fs.block(1, rows[::-1])])
    np.testing.assert_array_equal(cache.take((2, 1), rows[::-1]), both)
    monkeypatch.setattr(featcache.shard_io, "TORCH_CAST", False)  # numpy's cast, into the same column slices
    np.testing.assert_array_equal(cache.take((2, 1), rows[::-1]), both)
    empty = FeatureCache.planned(tmp_path / "empty", [], [0])
    (tmp_path / "empty").mkdir()
    empty.write_block(src, 0)
    assert np.load(empty.paths[0]).shape == empty.take((0,), np.zeros(0, np.int64)).shape == (0, fs.width)


def test_a_job_waits_for_its_block_only(fs: FeatureSet, tmp_path: Path) -> None:
    rows = np.array([3, 9, 12])
    cache = FeatureCache.planned(tmp_path, rows, [0, 1])
    cache.write_block(fs, 0)
    np.testing.assert_array_equal(cache.take((0,), rows), fs.block(0, rows))  # block 1 is not there yet
    later = threading.Timer(0.3, cache.write_block, (fs, 1))
    later.start()
    t0 = time.perf_counter()
    got = cache.take((1,), rows[1:])
    assert time.perf_counter() - t0 >= 0.25
    np.testing.assert_array_equal(got, fs.block(1, rows[1:]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["block-000.npy", "block-001.npy"]  # no part file left


def test_a_failed_read_reaches_the_waiting_job_with_its_cause(fs: FeatureSet, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where feature caches go
    rows = np.array([1, 2, 3])
    with pytest.raises(StudyError, match=r"reading the study's features failed: OSError: shard-00001\.h5: block 1 "
                                         r"is truncated; run `attrib cache verify`"):
        with feature_cache(Recording(fs, fail_on=1), rows, [0, 1]) as cache:
            np.testing.assert_array_equal(cache.take((0,), rows), fs.block(0, rows))
            assert cache.take((1,), rows) is None  # never: the error is raised instead
    assert not list(tmp_path.glob("attrib-features-*"))


def test_an_unread_failure_is_still_reported_when_the_study_ends(fs: FeatureSet, tmp_path: Path,
                                                                 monkeypatch) -> None:
    """A block no job asked for failed: the study must not end as if all was well."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where feature caches go
    with pytest.raises(StudyError, match="truncated"):
        with feature_cache(Recording(fs, fail_on=2), np.array([1, 2]), [0, 2]) as cache:
            cache.take((0,), np.array([1]))
            while not (Path(cache.folder) / FAILED).exists():
                time.sleep(0.01)


def test_leaving_the_study_stops_the_reading_and_removes_the_folder(fs: FeatureSet, tmp_path: Path,
                                                                     monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where feature caches go
    src = Recording(fs, delay=0.2)
    with pytest.raises(KeyboardInterrupt):
        with feature_cache(src, np.array([1, 2]), [0, 1, 2, 0, 1, 2]):
            raise KeyboardInterrupt
    assert len(src.read) <= 1  # stopped between two blocks, not after all of them
    assert not list(tmp_path.glob("attrib-features-*"))


def test_a_job_of_a_removed_cache_fails_instead_of_waiting(fs: FeatureSet, tmp_path: Path) -> None:
    cache = FeatureCache.planned(tmp_path / "gone", np.array([1]), [0])
    with pytest.raises(StudyError, match="is gone"):
        cache.take((0,), np.array([1]))


def test_planning_a_study_does_not_load_torch() -> None:
    """With --jobs N the study's own process only plans, reads features and writes lines: torch (3 s to
    import on a small machine) is loaded by the workers that fit heads."""
    code = ("import sys, attrib.cli, attrib.probe.study, attrib.probe.report, attrib.probe.choose\n"
            "from attrib.probe.heads import HEADS\n"
            "HEADS['logreg'](device='cpu').check_params(); HEADS['logreg'].check_path([0.1, 1.0])\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:5]\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_other_devices_are_still_checked() -> None:
    from attrib.probe.heads import HEADS

    with pytest.raises(ValueError, match="use 'cpu', 'cuda', 'cuda:N' or 'auto'"):
        HEADS["logreg"](device="gpu0").check_params()


def test_a_cache_that_cannot_fit_is_refused_before_any_read(fs: FeatureSet, tmp_path: Path, monkeypatch) -> None:
    """A full disk must not stop a study at its last block, hours in: the space is checked first."""
    import attrib.probe.featcache as featcache

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where feature caches go
    rows = np.arange(100)
    need = 3 * 100 * fs.width * 2  # three float16 blocks
    src = Recording(fs)
    real = shutil.disk_usage
    monkeypatch.setattr(featcache.shutil, "disk_usage", lambda p: real(p)._replace(free=need - 1))
    with pytest.raises(StudyError, match=rf"needs {need / 1e9:.2f} GB in {re.escape(str(tmp_path))} \(3 blocks of "
                                         r"float16 rows\) but only .* free there: point --scratch DIR"):
        with feature_cache(src, rows, [0, 1, 2]):
            pass
    assert src.read == [] and not list(tmp_path.glob("attrib-features-*"))
    monkeypatch.setattr(featcache.shutil, "disk_usage", lambda p: real(p)._replace(free=need))
    with feature_cache(src, rows, [0, 1, 2]) as cache:
        np.testing.assert_array_equal(cache.take((2,), rows[:3]), fs.block(2, rows[:3]))
