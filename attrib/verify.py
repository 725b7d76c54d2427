"""`attrib cache verify`: read a feature set in full and say what is wrong with it, and `--repair` it.

Why its own module: the store's readers check each shard cheaply as they open it (whole file, its own
rows: :mod:`attrib.shard_check`); this reads every array of every shard once, which only a deliberate
check can afford: shapes, every row index, the sha256 each shard carries (HDF5 cannot see a flipped byte
in uncompressed data), finite features in ok rows, the image list against the manifest, and the
manifest's ``label`` against what its weights are.

Repair removes broken shards and nothing else: re-extracting needs the backbone, the images and the
options that chose them, which `attrib features` has and verify does not. So `--repair` moves each broken
shard aside, checks it once more where it lies (a shard re-published meanwhile is put back), deletes
it, and says to rerun `attrib features` with the same options, which extracts exactly those shards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from attrib import claims, shard_check
from attrib.shard_write import shard_checksum
from attrib.store import IMAGES, MANIFEST, SHARD_GLOB, StoreError

if TYPE_CHECKING:
    from attrib.store import FeatureSet


@dataclass
class VerifyReport:
    path: Path
    n_images: int
    n_shards: int
    missing: list[int] = field(default_factory=list)
    broken: list[tuple[int, str]] = field(default_factory=list)  # (shard, why); shard -1: the feature set
    failed: list[tuple[int, str, str]] = field(default_factory=list)  # (row, path, error)
    nonfinite: list[int] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)  # temporary files of writers that were killed
    claims: list[str] = field(default_factory=list)  # shard claims of running (or killed) extractions

    @property
    def ok(self) -> bool:
        return not (self.missing or self.broken or self.nonfinite)


def verify_feature_set(fs: "FeatureSet") -> VerifyReport:
    """Check every shard: opens, complete, right rows and shapes, checksum, finite features in ok rows;
    the image list against the manifest; the manifest's label against its weights."""
    rep = VerifyReport(fs.path, fs.n_images, fs.n_shards)
    rep.broken.extend((-1, f"{MANIFEST}: {why}") for why in fs.manifest.label_problems())
    rep.claims = [f"{p.name}: held by {owner or 'an unreadable owner'}" + (" (stale: the next run takes it over)"
                                                                            if stale else "")
                  for p, owner, stale in claims.held(fs.path)]
    if not (fs.path / IMAGES).is_file():
        rep.broken.append((-1, f"{IMAGES} missing"))
        return rep
    try:
        images = fs.images
    except StoreError as exc:
        rep.broken.append((-1, str(exc)))
        return rep
    if len(images) != fs.n_images:
        rep.broken.append((-1, f"{IMAGES} has {len(images)} rows, manifest says {fs.n_images}"))
    if images.sha256() != fs.manifest.images_sha256:
        rep.broken.append((-1, f"{IMAGES} does not match the manifest's images_sha256"))
    rep.leftovers = fs.temp_files()
    expected = {fs.shard_path(k).name for k in range(fs.n_shards)}
    for extra in sorted(fs.path.glob(SHARD_GLOB)):
        if extra.name not in expected:
            rep.broken.append((-1, f"unexpected file {extra.name} (not a shard of {fs.n_images} images "
                                   f"in shards of {fs.shard_size})"))
    for k in range(fs.n_shards):
        if not fs.shard_path(k).exists():
            rep.missing.append(k)
            continue
        problem = _shard_verdict(fs, k, rep)
        if problem:
            rep.broken.append((k, problem))
    return rep


def remove_broken_shards(fs: "FeatureSet", report: VerifyReport) -> list[tuple[int, str]]:
    """Remove the shards ``report`` found broken (`attrib cache verify --repair`), each checked once more
    after it was moved aside; (k, what was wrong) for each one removed. `attrib features` with the same
    options then extracts exactly these shards again."""
    broken = sorted({k for k, _ in report.broken if k >= 0})
    scratch = VerifyReport(fs.path, fs.n_images, fs.n_shards)
    return fs.remove_damaged_shards(broken, lambda k, path: _shard_verdict(fs, k, scratch, path))


def _shard_verdict(fs: "FeatureSet", k: int, rep: VerifyReport, path: Path | None = None) -> str:
    try:
        return _verify_shard(fs, k, rep, path)
    except Exception as exc:  # h5py raises OSError, KeyError, ValueError, ... on damaged files
        return f"cannot read: {type(exc).__name__}: {exc}"


def _verify_shard(fs: "FeatureSet", k: int, rep: VerifyReport, path: Path | None = None) -> str:
    import h5py

    path = fs.shard_path(k) if path is None else path
    why = shard_check.file_damage(path)
    if why:
        return f"cannot read: {why}"
    start, stop = fs.shard_range(k)
    n, L, D, E = stop - start, fs.n_blocks, fs.width, fs.embed_dim
    with h5py.File(path, "r") as f:
        problems = []
        if f.attrs.get("complete") != 1:
            problems.append("not marked complete")
        for name, shape in (("row", (n,)), ("cls", (n, L, D)), ("embed", (n, E)), ("ok", (n,)), ("error", (n,))):
            if name not in f:
                problems.append(f"no dataset {name!r}")
            elif f[name].shape != shape:
                problems.append(f"{name} has shape {f[name].shape}, expected {shape}")
        if problems:
            return "; ".join(problems)
        why = shard_check.content_problem(f, start, stop, fs.manifest.identity_hash)
        if why:  # another shard's or feature set's file: its own checksum may well be right
            return why
        row, cls, embed, ok = f["row"][:], f["cls"][:], f["embed"][:], f["ok"][:]
        error = f["error"].asstr()[:].tolist()
        if not np.array_equal(row, np.arange(start, stop)):
            problems.append(f"rows are not exactly {start}..{stop - 1}")
        stored = f.attrs.get("sha256")
        if stored is not None and shard_checksum(row, cls, embed, ok, error) != stored:
            problems.append("checksum mismatch: the file was modified or corrupted after it was written")
    finite = np.isfinite(cls).all(axis=(1, 2)) & np.isfinite(embed).all(axis=1)
    rep.nonfinite.extend(int(start + i) for i in np.flatnonzero(ok & ~finite))
    for i in np.flatnonzero(~ok):
        rep.failed.append((start + int(i), fs.images.paths[start + int(i)], error[int(i)]))
    return "; ".join(problems)
