"""The one atomic writer: a reader sees the old file or the whole new one, the three ways to publish,
and the temporary-file names that let a later run clean up after killed writers (and only those)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from attrib import atomic


def test_replace_keep_and_exclusive(tmp_path: Path) -> None:
    p = tmp_path / "f.json"
    assert atomic.write_text(p, "one") and p.read_text() == "one"
    assert atomic.write_text(p, "two") and p.read_text() == "two"  # REPLACE: the new file wins
    assert not atomic.write_text(p, "three", atomic.KEEP) and p.read_text() == "two"
    assert not atomic.write_text(p, "four", atomic.EXCLUSIVE) and p.read_text() == "two"
    q = tmp_path / "new.h5"
    assert atomic.write_bytes(q, b"\0\1", atomic.KEEP) and q.read_bytes() == b"\0\1"
    assert atomic.temp_files(tmp_path) == []  # nothing left behind
    with pytest.raises(ValueError, match="publish mode 'overwrite'"):
        atomic.write_text(tmp_path / "x", "x", "overwrite")


def test_without_hard_links_keep_replaces_but_exclusive_never_does(tmp_path: Path, monkeypatch) -> None:
    def no_links(src, dst, *a, **k):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    p = tmp_path / "manifest.json"
    assert atomic.write_text(p, "first", atomic.EXCLUSIVE) and p.read_text() == "first"
    assert not atomic.write_text(p, "second", atomic.EXCLUSIVE) and p.read_text() == "first"
    assert atomic.write_text(p, "same rows", atomic.KEEP) and p.read_text() == "same rows"
    assert atomic.temp_files(tmp_path) == []


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "predictions.csv"
    out.write_text("old\n")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic.replacing(out) as f:
            f.write("half a new file\n")
            raise RuntimeError("disk full")
    assert out.read_text() == "old\n" and sorted(tmp_path.iterdir()) == [out]
    with atomic.replacing(out, newline="") as f:
        f.write("new\r\n")
    assert out.read_bytes() == b"new\r\n"


def test_temporary_names_say_host_and_pid_and_only_dead_local_writers_are_removed(tmp_path: Path) -> None:
    host = socket.gethostname()
    tmp = atomic.temp_path(tmp_path / "shard-00001.h5")
    assert tmp.parent == tmp_path and tmp.name.startswith(".shard-00001.h5.tmp-")
    assert atomic.temp_owner(tmp.name) == (host, os.getpid())
    assert atomic.temp_owner("shard-00001.h5") is None and atomic.temp_owner(".x.tmp-123") is None
    assert atomic.temp_owner(".a.tmp-my-host-name-42-abcd") == ("my-host-name", 42)
    dead = tmp_path / f".shard-00002.h5.tmp-{host}-999999999-deadbeef"
    other_host = tmp_path / ".shard-00003.h5.tmp-otherhost-1-cafecafe"
    for p in (tmp, dead, other_host):
        p.write_bytes(b"x")
    assert atomic.remove_stale(tmp_path) == [dead]  # this live process's file and another host's stay
    assert atomic.temp_files(tmp_path) == sorted([tmp, other_host])
