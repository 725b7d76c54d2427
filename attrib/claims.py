"""Shard claims: several `attrib features` processes started by hand share one feature set's shards.

Why: ranks split shards by ``k % world_size == rank``, which needs a launcher to number the processes.
A second run started by hand (another GPU, another node, a rerun while the first one still runs) would
extract every shard again: publishing is first-wins, so the result stays right, but the work is doubled
and one of the runs writes nothing. So before extracting shard k a process claims it: it publishes
``shard-0000k.h5.claim`` exclusively (a hard link of a complete temporary file: one winner, never a
half-written claim), holding its host, pid and a random token; every other process skips that shard. The
claim is released once the shard is published, or when the run ends.

A claim is stale, and taken over, when its owner is a process of this host that no longer exists (a
killed run), or when it was not refreshed for :data:`STALE_AFTER_S` (a process on another host cannot be
asked; a live owner refreshes its claims' time stamps as it works, see :meth:`Claim.refresh`). Taking
over goes through a second exclusive file (``.claim.break``), so two processes that find the same stale
claim do not both take it.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from attrib import atomic

SUFFIX = ".claim"
STALE_AFTER_S = 3600.0  # generous: a live owner refreshes its claims at least every REFRESH_EVERY_S
REFRESH_EVERY_S = 60.0
_BREAK_SUFFIX = ".break"
_BREAK_STALE_S = 60.0  # a breaker holds its lock for microseconds; an older one was killed holding it


@dataclass(frozen=True)
class Owner:
    """Who holds a claim, as its file says."""

    host: str
    pid: int
    token: str
    since: float  # time.time() when it was claimed

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}"


def read_owner(path: Path) -> Owner | None:
    """The owner a claim file names; None when it is gone or unreadable (not written by attrib)."""
    try:
        raw = json.loads(path.read_text())
        owner = Owner(str(raw["host"]), int(raw["pid"]), str(raw["token"]), float(raw["since"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return owner if owner.pid > 0 else None


def age(path: Path) -> float | None:
    """Seconds since the claim was made or last refreshed; None when it is gone."""
    try:
        return max(0.0, time.time() - path.stat().st_mtime)
    except FileNotFoundError:
        return None


def is_stale(path: Path, owner: Owner | None, stale_after: float = STALE_AFTER_S) -> bool:
    """Whether the claim at ``path`` may be taken over: its owner is a dead process of this host, or it
    was not refreshed for ``stale_after`` seconds (any host; also a pid reused by another program)."""
    seconds = age(path)
    if seconds is None:
        return True
    if seconds > stale_after:
        return True
    return owner is not None and atomic.owner_dead(owner.host, owner.pid)


@dataclass
class Claim:
    """A claim this process holds on one shard; :meth:`release` it when the shard is published."""

    path: Path
    token: str

    def refresh(self) -> None:
        """Tell other processes this owner is still at work (the claim's mtime is its heartbeat)."""
        try:
            os.utime(self.path)
        except FileNotFoundError:
            pass

    def release(self) -> None:
        """Remove the claim file, unless another process took it over (then it is theirs to remove)."""
        owner = read_owner(self.path)
        if owner is not None and owner.token == self.token:
            self.path.unlink(missing_ok=True)


def acquire(path: Path, stale_after: float = STALE_AFTER_S) -> Claim | None:
    """Claim ``path`` for this process; None when a live process holds it (or is taking it over)."""
    token = uuid.uuid4().hex
    text = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": token, "since": time.time()})
    for _ in range(2):  # the second try follows the removal of a stale claim
        if atomic.write_text(path, text, atomic.EXCLUSIVE):
            return Claim(path, token)
        owner = read_owner(path)
        if not is_stale(path, owner, stale_after) or not _break(path, owner, stale_after):
            return None
    return None


def _break(path: Path, judged: Owner | None, stale_after: float) -> bool:
    """Remove the stale claim at ``path`` if it is still the one judged stale; True when it is gone.

    Only the process that creates ``<claim>.break`` may remove the claim, and it looks again first: a
    second process that judged the same claim stale must not remove the fresh claim the first one made.
    """
    lock = path.with_name(path.name + _BREAK_SUFFIX)
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        seconds = age(lock)
        if seconds is not None and seconds > _BREAK_STALE_S:
            lock.unlink(missing_ok=True)
        return False
    os.close(fd)
    try:
        now = read_owner(path)
        if age(path) is None:
            # Gone meanwhile (released, or broken by the lock's last holder): nothing to remove. Removing
            # it anyway could remove the fresh claim a process makes the next instant, which needs no lock.
            return True
        same = (now.token if now else None) == (judged.token if judged else None)
        if same and is_stale(path, now, stale_after):
            path.unlink(missing_ok=True)
            return True
        return False
    finally:
        lock.unlink(missing_ok=True)


def remove_stale(folder: Path, stale_after: float = STALE_AFTER_S) -> list[Path]:
    """Remove the stale claims in ``folder`` (a killed run's, also on shards it had published); returns them."""
    removed = []
    for p in sorted(folder.glob("*" + SUFFIX)):
        owner = read_owner(p)
        if is_stale(p, owner, stale_after) and _break(p, owner, stale_after):
            removed.append(p)
    return removed


def held(folder: Path) -> list[tuple[Path, Owner | None, bool]]:
    """Every claim file in ``folder``: (path, owner, stale), sorted by name (for `attrib cache verify`)."""
    out = []
    for p in sorted(folder.glob("*" + SUFFIX)):
        owner = read_owner(p)
        out.append((p, owner, is_stale(p, owner)))
    return out
