"""The feature cache: the one contract between ``extract`` (writes) and ``probe`` (reads).

A *feature set* is a folder holding everything one extraction produced::

    manifest.json    what was extracted, by which model and weights, from which image list
    images.tsv       the image list, one row per image: row, path, source, subset
    shard-00000.h5   rows [0, S): row int64 (n,), cls float16 (n, L, D), embed float16 (n, E),
    shard-00001.h5   ok bool (n,), error str (n,); attribute complete=1
    ...

Why this shape: extraction of millions of images takes days and many processes, so the unit of work and
of durability is a shard. A shard is written to a temporary file, fsynced and published under its name in
one step (:mod:`attrib.atomic`: a hard link, so the first complete copy wins), so a shard that exists is
complete; a killed run loses at most the shards in flight, and any number of processes can split shards
by ``k % world_size == rank`` without talking to each other. ``cls`` is chunked (rows, 1, D) and written
block by block, so the chunks of one block lie next to each other on disk: reading one block (what every
probe does) is one sequential read of 1/L of the file. Features are stored uncompressed: fp16 activations
do not compress, and gzip makes reads 10-20x slower. Each shard carries a sha256 of its arrays (attribute
``sha256``) so that ``verify`` catches silent corruption, which HDF5 itself cannot see in uncompressed data.

The manifest's fields, and the rules for when two feature sets match, are in :mod:`attrib.manifest`;
the names of the files in a feature-set folder are known here only. A feature set whose dataset grew has
parts and an index besides (:mod:`attrib.parts`); :meth:`FeatureSet.open` reads it as one image list.
A shard's layout is written by :mod:`attrib.shard_write`, and rows are read back by :mod:`attrib.shard_read`.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from numpy.typing import DTypeLike

from attrib import atomic, claims, shard_check, shard_read, shard_write
from attrib.data.catalog import ImageList
from attrib.manifest import FORMAT_VERSION, SAME_FEATURE_SET, FeatureRequest, Manifest
from attrib.manifest import feature_set_name, identity_hash  # noqa: F401  (re-exported for callers)
from attrib.store_errors import ManifestMismatch, ShardDamaged, StoreError  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from attrib.verify import VerifyReport

MANIFEST = "manifest.json"
IMAGES = "images.tsv"
SHARD_GLOB = "shard-*.h5"
DEFAULT_SHARD_SIZE = 10_000


class FeatureSet:
    """A feature set on disk. Use :meth:`open` to read, :meth:`create` to start or resume writing."""

    def __init__(self, path: str | os.PathLike, manifest: Manifest):
        self.path = Path(path)
        self.manifest = manifest
        self._images: ImageList | None = None

    # ------------------------------------------------------------------------------- open / create
    @staticmethod
    def exists(path: str | os.PathLike) -> bool:
        """Whether ``path`` holds a feature set (whether or not it opens: :meth:`open` says why not)."""
        return (Path(path) / MANIFEST).is_file()

    @classmethod
    def open(cls, path: str | os.PathLike, whole: bool = True) -> "FeatureSet":
        """The feature set at ``path``. One that grew (:mod:`attrib.parts`) opens as the union of its parts;
        ``whole=False`` opens the folder's own first part, an ordinary feature set (what writers extend)."""
        path = Path(path)
        if whole:
            from attrib.parts import open_grown  # here: attrib.parts builds on this module

            grown = open_grown(path)
            if grown is not None:
                return grown
        mpath = path / MANIFEST
        if not mpath.is_file():
            raise StoreError(f"{path} is not a feature set (no {MANIFEST}); list them with `attrib cache ls`")
        try:
            raw = json.loads(mpath.read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(f"{mpath}: unreadable manifest ({exc})") from None
        if not isinstance(raw, dict):
            raise StoreError(f"{mpath}: not a manifest (a JSON object was expected)")
        manifest = Manifest.from_json(raw)
        if manifest.format_version != FORMAT_VERSION:
            raise StoreError(f"{mpath}: format version {manifest.format_version}, this attrib reads {FORMAT_VERSION}")
        missing = manifest.damaged_fields()
        if missing:
            raise StoreError(f"{mpath}: damaged manifest, no valid {', '.join(missing)}")
        return cls(path, manifest)

    @classmethod
    def create(cls, path: str | os.PathLike, manifest: Manifest | Mapping[str, Any], images: ImageList) -> "FeatureSet":
        """Create the feature set at ``path``, or reopen it if it exists with a compatible manifest.

        ``manifest`` describes the features (a mapping is read as manifest.json would be); its image
        count and image-list hash are taken from ``images``. Safe to call from many processes at once:
        the first manifest to land wins, the others are compared against it.
        """
        path = Path(path)
        manifest = Manifest.coerce(manifest)
        manifest = manifest.replace(
            n_images=len(images), images_sha256=images.sha256(),
            created=manifest.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        if cls.exists(path):
            return cls._reopen(path, manifest, images)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file where a folder should be, no permission, a name too long, ...
            raise StoreError(f"cannot create the feature-set folder {path}: {exc.strerror or exc}; choose "
                             "another --cache or --out") from None
        # The manifest is claimed first (exclusively): only the process that created the feature set
        # writes images.tsv, so a loser with a different image list can never overwrite it.
        text = json.dumps(manifest.to_json(), indent=2)
        if not atomic.write_text(path / MANIFEST, text, atomic.EXCLUSIVE):
            return cls._reopen(path, manifest, images)
        fs = cls(path, manifest)
        fs._ensure_images(images)
        return fs

    @classmethod
    def _reopen(cls, path: Path, manifest: Manifest, images: ImageList) -> "FeatureSet":
        existing = cls.open(path, whole=False)
        diffs = existing.manifest.mismatches(manifest, SAME_FEATURE_SET)
        if diffs:
            raise ManifestMismatch(
                f"{path} was extracted with different settings:\n  - " + "\n  - ".join(diffs) +
                "\nUse another --cache/--out folder, or rerun with the cached settings.")
        existing._ensure_images(images)
        return existing

    def _ensure_images(self, images: ImageList) -> None:
        """Write images.tsv if it is missing (its creator may have been killed right after the manifest).

        The list was checked against the manifest's images_sha256, so every writer writes the same bytes.
        """
        if not (self.path / IMAGES).exists():
            buf = io.StringIO()
            images.write_tsv(buf)
            atomic.write_text(self.path / IMAGES, buf.getvalue(), atomic.KEEP)
        self._images = images

    def temp_files(self) -> list[str]:
        """Names of writers' temporary files in this feature set (live, or left by killed writers)."""
        return [p.name for p in atomic.temp_files(self.path)]

    def remove_stale_temp_files(self) -> list[str]:
        """Remove the temporary files of this host's killed writers (a resumed run calls this)."""
        return [p.name for p in atomic.remove_stale(self.path)]

    def remove_stale_claims(self) -> list[str]:
        """Remove shard claims of killed (or long silent) extractions (a resumed run calls this)."""
        return [p.name for p in claims.remove_stale(self.path)]

    # ---------------------------------------------------------------------------------- properties
    @property
    def id(self) -> str:
        return self.path.name

    @property
    def n_images(self) -> int:
        return int(self.manifest.n_images)

    @property
    def n_blocks(self) -> int:
        return int(self.manifest.n_blocks)

    @property
    def width(self) -> int:
        return int(self.manifest.width)

    @property
    def embed_dim(self) -> int:
        return int(self.manifest.embed_dim)

    @property
    def shard_size(self) -> int:
        return int(self.manifest.shard_size)

    @property
    def n_shards(self) -> int:
        return -(-self.n_images // self.shard_size)

    @property
    def label(self) -> str:
        """Warning label users must see next to any number computed from these features ('' if none).

        Follows from the weights (random-init: always), not from the manifest's free-text ``label``."""
        return self.manifest.warning

    @property
    def images(self) -> ImageList:
        if self._images is None:
            try:
                self._images = ImageList.read_tsv(self.path / IMAGES, root=self.manifest.root,
                                                  sha256=self.manifest.images_sha256)
            except (OSError, ValueError) as exc:  # its writer was killed right after the manifest, or a damaged file
                raise StoreError(f"{self.path / IMAGES}: missing or unreadable ({exc}); rerun `attrib features` "
                                 "with the same options to rewrite it") from None
        return self._images

    def shard_range(self, k: int) -> tuple[int, int]:
        start = k * self.shard_size
        return start, min(start + self.shard_size, self.n_images)

    def shard_path(self, k: int) -> Path:
        return self.path / f"shard-{k:05d}.h5"

    def claim_path(self, k: int) -> Path:
        """Where an extracting process claims shard ``k`` (see :mod:`attrib.claims`)."""
        return self.path / f"{self.shard_path(k).name}{claims.SUFFIX}"

    def claim(self, k: int) -> "claims.Claim | None":
        """Claim shard ``k`` for this process; None when another live process is extracting it."""
        return claims.acquire(self.claim_path(k))

    def shards_done(self) -> list[int]:
        """Shards whose file exists (whole or damaged: see :meth:`damaged_shards`)."""
        return [k for k in range(self.n_shards) if self.shard_path(k).exists()]

    def damaged_shards(self, shards: Iterable[int] | None = None) -> list[tuple[int, str]]:
        """(k, what is wrong) for each existing shard file that is empty, not HDF5 or truncated.

        Cheap (a stat and the first bytes of each file, no HDF5), so listings can afford it; the rows a
        shard holds are checked when it is opened (:meth:`shard_problem`)."""
        out = []
        for k in range(self.n_shards) if shards is None else shards:
            why = shard_check.file_damage(self.shard_path(k))
            if why and why != "missing":
                out.append((k, why))
        return out

    def shards_todo(self, rank: int = 0, world_size: int = 1) -> list[int]:
        """Missing shards of rank ``rank`` of ``world_size`` (all missing shards by default)."""
        return [k for k in range(self.n_shards) if k % world_size == rank and not self.shard_path(k).exists()]

    def shard_damage(self) -> tuple[list[int], list[tuple[int, str]]]:
        """(missing shards, (k, what is wrong) of the visibly damaged ones): one look at each shard file
        (it is called on every open of a feature set, and a set can have thousands of shards)."""
        missing, damaged = [], []
        for k in range(self.n_shards):
            why = shard_check.file_damage(self.shard_path(k))
            if why == "missing":
                missing.append(k)
            elif why:
                damaged.append((k, why))
        return missing, damaged

    @property
    def complete(self) -> bool:
        """Every shard exists and none is visibly damaged (empty, not HDF5, truncated)."""
        missing, damaged = self.shard_damage()
        return not missing and not damaged

    def require_complete(self) -> None:
        missing, damaged = self.shard_damage()
        if missing:
            raise StoreError(f"{self.path} is incomplete: {len(missing)} of {self.n_shards} shards missing "
                             f"(first: {self.shard_path(missing[0]).name}). Rerun `attrib features` with the "
                             "same options to finish it.")
        if damaged:
            raise self.damaged_error(damaged)

    def damaged_error(self, damaged: list[tuple[int, str]]) -> ShardDamaged:
        """The error for these damaged shards (the first five named), with the fix."""
        return ShardDamaged(f"{self.path}: {len(damaged)} of {self.n_shards} shards damaged (" + "; ".join(
            f"{self.shard_path(k).name}: {why}" for k, why in damaged[:5]) + (" ..." if len(damaged) > 5 else "")
            + f"). {self.fix_hint}")

    @property
    def fix_hint(self) -> str:
        return ("Rerun `attrib features` with the same options to re-extract damaged shards (or remove them "
                f"first with `attrib cache verify --repair {self.path}`).")

    def _damaged(self, k: int, why: str) -> ShardDamaged:
        return ShardDamaged(f"{self.shard_path(k)} is damaged: {why}. {self.fix_hint}", why)

    @contextmanager
    def open_shard(self, k: int, path: Path | None = None):
        """Shard ``k`` opened for reading once it is whole and holds rows shard_range(k) of this feature
        set (cheap checks: see :mod:`attrib.shard_check`); :class:`ShardDamaged` naming it otherwise."""
        import h5py

        path = self.shard_path(k) if path is None else path
        why = shard_check.file_damage(path)
        if why == "missing":
            raise StoreError(f"{path} is missing: the feature set is incomplete. Rerun `attrib features` with "
                             "the same options to finish it.")
        if why:
            raise self._damaged(k, why)
        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise self._damaged(k, f"HDF5 cannot open it ({exc})") from None
        with f:
            try:
                why = shard_check.content_problem(f, *self.shard_range(k), self.manifest.identity_hash)
            except (OSError, KeyError, ValueError) as exc:
                why = f"unreadable row dataset ({exc})"
            if why:
                raise self._damaged(k, why)
            yield f

    def shard_problem(self, k: int, path: Path | None = None) -> str:
        """'' when shard ``k`` (or the file ``path`` standing in for it) opens and holds its rows."""
        try:
            with self.open_shard(k, path):
                return ""
        except ShardDamaged as exc:
            return exc.why
        except StoreError:
            return "missing"

    def remove_damaged_shards(self, shards: Iterable[int] | None = None,
                              problem: Callable[[int, Path], str] | None = None) -> list[tuple[int, str]]:
        """Remove each existing shard that :meth:`shard_problem` (or ``problem(k, path)``) finds damaged, so
        that `attrib features` extracts it again; (k, what was wrong) for each one removed.

        Each file is re-checked after it was moved aside (:func:`attrib.shard_check.remove_if_damaged`),
        so a shard that another process re-published meanwhile is kept."""
        problem = problem or (lambda k, path: self.shard_problem(k, path))
        out = []
        for k in range(self.n_shards) if shards is None else shards:
            if not self.shard_path(k).exists() or not problem(k, self.shard_path(k)):
                continue
            try:
                why = shard_check.remove_if_damaged(self.shard_path(k), lambda path, k=k: problem(k, path))
            except OSError as exc:  # a read-only cache, another owner
                raise StoreError(f"cannot remove the damaged shard {self.shard_path(k)}: {exc.strerror or exc}; "
                                 "remove it by hand, then rerun `attrib features` with the same options") from None
            if why:
                out.append((k, why))
        return out

    # -------------------------------------------------------------------------------------- write
    def write_shard(self, k: int, cls: np.ndarray, embed: np.ndarray, ok: np.ndarray,
                    error: Sequence[str]) -> Path | None:
        """Write shard ``k`` atomically (:func:`attrib.shard_write.write_shard`); its path, or None when
        another process had published it first."""
        return shard_write.write_shard(self, k, cls, embed, ok, error)

    # --------------------------------------------------------------------------------------- read
    def block(self, layer: int, rows: Sequence[int] | np.ndarray | None = None,
              dtype: DTypeLike = np.float32) -> np.ndarray:
        """CLS token after block ``layer`` (0-based) as float32 (n, D); reads only that block.

        ``dtype="float16"`` returns the stored values themselves, half the memory: float32 holds every
        one of them exactly, so casting later gives the same numbers.
        """
        if not -self.n_blocks <= layer < self.n_blocks:
            raise IndexError(f"block {layer} out of range: this feature set has blocks 0..{self.n_blocks - 1}")
        return shard_read.read(self, "cls", self.width, rows, block=layer % self.n_blocks, dtype=dtype)

    def embed(self, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Final projected embedding as float32 (n, E)."""
        return shard_read.read(self, "embed", self.embed_dim, rows)

    def status(self) -> tuple[np.ndarray, list[str]]:
        """(ok flags, error texts) for every row, read from all shards."""
        self.require_complete()
        ok = np.zeros(self.n_images, dtype=bool)
        errors = [""] * self.n_images
        for k in range(self.n_shards):
            start, stop = self.shard_range(k)
            with self.open_shard(k) as f:
                ok[start:stop] = f["ok"][:]
                bad = np.flatnonzero(~ok[start:stop])
                if bad.size:
                    err = f["error"].asstr()
                    for i in bad:
                        errors[start + int(i)] = err[int(i)]
        return ok, errors

    def rows(self, paths: Iterable[str]) -> np.ndarray:
        """Row indices of ``paths`` (relative to the dataset root); unknown paths are an error naming them."""
        out, missing = [], []
        for p in paths:
            r = self.images.index(p)
            if r is None:
                missing.append(p)
            else:
                out.append(r)
        if missing:
            raise KeyError(f"{len(missing)} path(s) not in {self.id}: " + ", ".join(missing[:20]) +
                           (" ..." if len(missing) > 20 else ""))
        return np.asarray(out, dtype=np.int64)

    # ------------------------------------------------------------------------------------- verify
    def verify(self) -> "VerifyReport":
        """Check every shard in full (see :func:`attrib.verify.verify_feature_set`)."""
        from attrib.verify import verify_feature_set

        return verify_feature_set(self)

    def remove_broken_shards(self, report: "VerifyReport") -> list[tuple[int, str]]:
        """Remove the shards ``report`` found broken (see :func:`attrib.verify.remove_broken_shards`)."""
        from attrib.verify import remove_broken_shards

        return remove_broken_shards(self, report)

    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.glob(SHARD_GLOB))


def list_feature_sets(cache: str | os.PathLike) -> list[FeatureSet]:
    """Every feature set directly under ``cache``, newest first."""
    cache = Path(cache)
    if not cache.is_dir():
        return []
    out = []
    for d in cache.iterdir():
        if FeatureSet.exists(d):
            try:
                out.append(FeatureSet.open(d))
            except StoreError:
                continue
    return sorted(out, key=lambda fs: ((fs.path / MANIFEST).stat().st_mtime, fs.id), reverse=True)


def find_feature_set(cache: str | os.PathLike, request: FeatureRequest) -> FeatureSet | None:
    """The newest complete feature set under ``cache`` that `attrib features` would extract into for
    ``request`` (same settings and the same image list), or None."""
    for fs in list_feature_sets(cache):
        if not request.matches_settings(fs.manifest) or not fs.complete:
            continue
        try:
            if request.same_image_list(fs.manifest, lambda fs=fs: fs.images.counts().values()):
                return fs
        except StoreError:  # a damaged image list matches nothing; `attrib cache verify` says why
            continue
    return None
