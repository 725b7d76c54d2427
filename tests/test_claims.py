"""Shard claims: one holder at a time, live holders respected, stale ones (dead pid here, silent elsewhere)
taken over by exactly one process, and a claim released only by its holder."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from attrib import claims
from attrib.store import FeatureSet
from test_store import _images, _manifest


def _fake(path: Path, host: str, pid: int, age_s: float = 0.0) -> None:
    """A claim file as another process would have left it, ``age_s`` seconds old."""
    path.write_text(json.dumps({"host": host, "pid": pid, "token": "theirs", "since": time.time() - age_s}))
    os.utime(path, (time.time() - age_s, time.time() - age_s))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_one_holder_at_a_time_and_release_frees_it(tmp_path: Path) -> None:
    fs = FeatureSet.create(tmp_path / "fs", _manifest(), _images())
    assert fs.claim_path(1).name == "shard-00001.h5.claim"
    mine = fs.claim(1)
    assert mine is not None and fs.claim(1) is None  # held by a live process (this one)
    owner = claims.read_owner(fs.claim_path(1))
    assert owner.host == socket.gethostname() and owner.pid == os.getpid() and owner.token == mine.token
    assert [(p.name, o.pid, stale) for p, o, stale in claims.held(fs.path)] == [("shard-00001.h5.claim", os.getpid(),
                                                                                 False)]
    mine.release()
    assert not fs.claim_path(1).exists()
    again = fs.claim(1)
    assert again is not None and again.token != mine.token
    mine.release()  # a released claim's old handle removes nothing
    assert fs.claim_path(1).exists()
    assert not list(fs.path.glob(".*tmp-*")) and not list(fs.path.glob("*.break"))


def test_stale_claims_are_taken_over_live_ones_are_not(tmp_path: Path) -> None:
    here, path = socket.gethostname(), tmp_path / "shard-00000.h5.claim"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _fake(path, here, sleeper.pid)  # a live process of this host
        assert claims.acquire(path) is None
        _fake(path, here, sleeper.pid, age_s=2 * claims.STALE_AFTER_S)  # live, but silent for hours: pid reused?
        assert claims.acquire(path) is not None
    finally:
        sleeper.kill()
        sleeper.wait()
    _fake(path, here, _dead_pid())  # killed run of this host
    taken = claims.acquire(path)
    assert taken is not None and claims.read_owner(path).pid == os.getpid()
    _fake(path, "another-host", 12345, age_s=60)  # another host's pid cannot be asked: only age counts
    assert claims.acquire(path) is None
    taken.release()  # not ours any more: left alone
    assert claims.read_owner(path).token == "theirs"
    _fake(path, "another-host", 12345, age_s=claims.STALE_AFTER_S + 60)
    assert claims.acquire(path) is not None
    path.write_text("")  # unreadable, fresh: someone is writing it; old: taken over
    assert claims.acquire(path) is None
    os.utime(path, (1, 1))
    assert claims.acquire(path) is not None


def test_refresh_keeps_a_claim_fresh(tmp_path: Path) -> None:
    claim = claims.acquire(tmp_path / "c.claim")
    os.utime(claim.path, (1, 1))
    assert claims.is_stale(claim.path, claims.read_owner(claim.path))
    claim.refresh()
    assert not claims.is_stale(claim.path, claims.read_owner(claim.path))


RACERS, ROUNDS = 8, 16


def _race(path: Path, start, finish, won) -> None:
    start.wait(60)
    if claims.acquire(path) is not None:
        with won.get_lock():
            won.value += 1
    # Stay alive until every racer has tried: a winner that exited would leave a dead process's claim,
    # which the protocol rightly lets a slower racer take over (a second, legitimate winner).
    finish.wait(60)


def test_processes_racing_for_one_stale_claim_leave_exactly_one_holder(tmp_path: Path) -> None:
    path, ctx = tmp_path / "shard-00000.h5.claim", mp.get_context("fork")
    for _ in range(ROUNDS):  # a naive take-over (no .break lock) let two win in 10 of 10 runs of this test
        _fake(path, socket.gethostname(), _dead_pid())
        start, finish, won = ctx.Barrier(RACERS), ctx.Barrier(RACERS), ctx.Value("i", 0)
        procs = [ctx.Process(target=_race, args=(path, start, finish, won)) for _ in range(RACERS)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * RACERS and won.value == 1
        assert not list(tmp_path.glob("*.break"))


def test_a_breaker_that_finds_the_claim_gone_leaves_the_next_claim_alone(tmp_path: Path, monkeypatch) -> None:
    """The interleaving behind a rare second winner of the race above: a breaker holding the lock finds
    the claim gone, and another process (which needs no lock to claim a free shard) claims it the next
    instant. The breaker must not remove that fresh claim."""
    path, made = tmp_path / "shard-00000.h5.claim", []
    real_age = claims.age

    def age_then_another_process_claims(p: Path) -> float | None:
        seconds = real_age(p)
        if p == path and seconds is None and not made:
            made.append(claims.acquire(path))  # lands just after the breaker looked
        return seconds

    monkeypatch.setattr(claims, "age", age_then_another_process_claims)
    assert claims._break(path, None, claims.STALE_AFTER_S) is True  # gone: its caller tries to claim again
    assert made and made[0] is not None
    assert claims.read_owner(path) is not None and claims.read_owner(path).token == made[0].token
    assert claims.acquire(path) is None  # and that try finds the live claim


def test_stale_claims_are_cleaned_up_live_ones_kept(tmp_path: Path) -> None:
    fs = FeatureSet.create(tmp_path / "fs", _manifest(), _images())
    _fake(fs.claim_path(0), socket.gethostname(), _dead_pid())  # killed after publishing, before releasing
    _fake(fs.claim_path(1), "another-host", 12345, age_s=60)
    _fake(fs.claim_path(2), "another-host", 12345, age_s=2 * claims.STALE_AFTER_S)
    assert fs.remove_stale_claims() == ["shard-00000.h5.claim", "shard-00002.h5.claim"]
    assert [p.name for p, _, _ in claims.held(fs.path)] == ["shard-00001.h5.claim"]
