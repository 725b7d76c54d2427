"""The extraction loop: images -> DataLoader workers -> one forward per batch -> shards on disk.

Why this shape: decoding and resizing run in worker processes while the model runs, each batch's CLS
tokens are copied to the host asynchronously and handled one batch later, and finished shards are
written by a background thread, so the accelerator (or the CPU's matrix units) never waits on I/O.
The unit of work is a shard (see :mod:`attrib.store`): a killed run resumes at the first missing shard,
and ranks split shards by ``k % world_size == rank``. Processes started by hand (no ranks) share the work
through shard claims (:mod:`attrib.claims`): each shard is extracted by the process that claimed it,
the others skip it. A rerun first re-extracts the shards it finds damaged (truncated, empty, holding
other rows), so a damaged cache is repaired by the command that made it.

Bad images never stop a run: each one becomes a row with ``ok=False``, zero features and the error text.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from attrib.data.catalog import ImageList
from attrib.data.images import MAX_PIXELS, ImageDecodeError, error_text, load_rgb
from attrib.errors import AttribError
from attrib.extract.backbone import RANDOM_INIT_LABEL, Backbone
from attrib.extract.shards import Collector, ShardBatches, ShardWriter
from attrib.extract.views import View
from attrib.manifest import Manifest
from attrib.store import DEFAULT_SHARD_SIZE, FeatureSet

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class ExtractError(AttribError, RuntimeError):
    """The run cannot start as asked (device missing, bad rank, ...); the message says what to change."""


@dataclass
class RunConfig:
    batch_size: int = 64
    workers: int | None = None  # None: min(8, cpu_count - 1)
    device: str = "auto"
    precision: str = "auto"
    shard_size: int | None = None  # None: the existing feature set's, else DEFAULT_SHARD_SIZE
    rank: int = 0
    world_size: int = 1
    threads: int | None = None  # torch intra-op threads; None = torch's default (all cores)
    progress: bool = True


@dataclass
class RunSummary:
    feature_set: FeatureSet
    images: int
    failed: int
    seconds: float
    bytes_written: int
    shards_written: int
    shards_left: int
    shards_todo: int = 0  # this run's missing shards when it started (damaged ones it removed included)
    repaired: list[tuple[int, str]] = field(default_factory=list)  # damaged shards removed to re-extract
    claimed_elsewhere: list[int] = field(default_factory=list)  # skipped: another live process extracts them
    notes: list[str] = field(default_factory=list)  # what an extension did (new part, files gone, ...)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")

    @property
    def already_complete(self) -> bool:
        """Nothing to do: every shard existed, whole, before this run started."""
        return self.shards_todo == 0 and self.shards_left == 0

    def __str__(self) -> str:
        mb = self.bytes_written / 1e6
        s = (f"{self.images} images ({self.failed} failed) in {self.seconds:.1f} s = {self.images_per_s:.1f} img/s; "
             f"{self.shards_written} shards, {mb:.1f} MB written")
        if self.repaired:
            s += f"; {len(self.repaired)} damaged shards re-extracted"
        if self.claimed_elsewhere:
            s += f"; {len(self.claimed_elsewhere)} shards left to other processes extracting them"
        if self.shards_left:
            s += f"; {self.shards_left} shards still missing (other ranks or processes, or rerun to finish)"
        return s


def dist_from_env() -> tuple[int, int, int | None]:
    """(rank, world_size, local_rank) as set by torchrun (RANK, WORLD_SIZE) or srun (SLURM_PROCID, ...).

    Values are checked here because a launcher's variable is not an option the user typed: a stray
    ``WORLD_SIZE=abc`` or a rank outside the world must say which variable is wrong, not raise ValueError.
    Unset and empty variables count as not given.
    """
    env = os.environ
    if env.get("WORLD_SIZE", "").strip():
        rank_var, world_var, local_var = "RANK", "WORLD_SIZE", "LOCAL_RANK"
    elif env.get("SLURM_NTASKS", "").strip() and env.get("SLURM_PROCID", "").strip():
        rank_var, world_var, local_var = "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"
    else:
        return 0, 1, None
    world = _env_int(world_var, minimum=1) or 1  # set (checked above): never None here
    rank = _env_int(rank_var, minimum=0) or 0  # torchrun without RANK: a single process
    if rank >= world:
        raise ExtractError(f"environment variable {rank_var}={rank} is not below {world_var}={world}: ranks "
                           f"run from 0 to {world - 1}. Fix or unset them, or pass --rank and --world-size")
    return rank, world, _env_int(local_var, minimum=0)


def _env_int(name: str, minimum: int) -> int | None:
    """Integer environment variable ``name``, at least ``minimum``; None when unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ExtractError(f"environment variable {name}={raw!r} must be an integer >= {minimum} (launchers such "
                           "as torchrun and srun set it). Fix or unset it, or pass --rank and --world-size")
    return value


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ExtractError("--device cuda: no CUDA device is visible to torch; use --device cpu or auto")
        if device == "cuda":
            _, _, local = dist_from_env()
            if local is not None:
                return torch.device("cuda", local % torch.cuda.device_count())
    elif device != "cpu":
        raise ExtractError(f"--device {device!r}: use auto, cpu, cuda or cuda:N")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ExtractError(f"--precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ExtractError("--precision bf16: this GPU does not support bfloat16; use fp16 or fp32")
    return precision


def autocast_for(precision: str, device: torch.device) -> Any:
    """The context a batch's forward runs in: autocast to fp16 / bf16, or nothing for fp32 (shared with
    the extraction benchmark, whose bare forward must run as a run does)."""
    return torch.autocast(device.type, dtype=_DTYPES[precision]) if precision in _DTYPES else nullcontext()


def default_workers() -> int:
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def loader_workers(requested: int | None) -> int:
    """The DataLoader workers a run uses: ``--workers`` when given, else :func:`default_workers`."""
    return default_workers() if requested is None else requested


class ImageRows(Dataset):
    """Row index -> (row, tensor, error). A bad image yields a zero tensor and its error text."""

    def __init__(self, images: ImageList, transform: Any, view: View, shape: tuple[int, ...]):
        self.images, self.transform, self.view, self.shape = images, transform, view, shape

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, row: int) -> tuple[int, torch.Tensor, str]:
        try:
            img = load_rgb(self.images.abspath(row))
            img = self.view(img, self.images.paths[row])
            _check_aspect(img.size, max(self.shape[1:]))
            x = self.transform(img)
            if tuple(x.shape) != self.shape:
                raise ValueError(f"transform gave shape {tuple(x.shape)}, expected {self.shape}")
            return row, x, ""
        except ImageDecodeError as exc:
            return row, torch.zeros(self.shape), str(exc)
        except Exception as exc:  # a view or transform failing on an odd image must not stop the run
            return row, torch.zeros(self.shape), error_text(exc)


def image_loader(rows: Dataset, batch_sampler: Any, workers: int, pin_memory: bool) -> DataLoader:
    """The DataLoader a run reads its batches through; the decode benchmark uses it too, so that the CPU's
    feed rate it reports is the one extraction gets (4 batches prefetched per worker)."""
    return DataLoader(rows, batch_sampler=batch_sampler, num_workers=workers, pin_memory=pin_memory,
                      prefetch_factor=4 if workers > 0 else None, persistent_workers=False)


def _check_aspect(size: tuple[int, int], side: int) -> None:
    """A sliver (say 1 x 100000 px) is small on disk but, once its short side is resized to the model's
    input size, would need gigabytes and kill the worker: record it as a failure instead."""
    w, h = size
    if max(w, h) / max(1, min(w, h)) * side * side > MAX_PIXELS:
        raise ImageDecodeError(f"aspect ratio too extreme ({w}x{h}): resizing its short side to {side} px "
                               f"would exceed {MAX_PIXELS} pixels")


def _input_shape(backbone: Backbone) -> tuple[int, int, int]:
    pp = backbone.spec["preprocess"]
    if "input_size" in pp:  # timm
        return tuple(int(v) for v in pp["input_size"])  # type: ignore[return-value]
    size = pp["size"]
    h, w = (size, size) if isinstance(size, int) else size
    return (3, int(h), int(w))


def _versions() -> dict[str, str]:
    import h5py
    import open_clip
    import timm

    import attrib

    return {"attrib": attrib.__version__, "torch": torch.__version__, "open_clip": open_clip.__version__,
            "timm": timm.__version__, "h5py": h5py.__version__, "python": sys.version.split()[0]}


def build_manifest(images: ImageList, backbone: Backbone, dataset: str, view: View, shard_size: int,
                   precision: str, extra: Mapping[str, Any] | None = None) -> Manifest:
    """Everything needed to reproduce (or refuse to mix) these features.

    ``extra``: further manifest fields (JSON keys), e.g. the options that chose the image list.
    """
    # the image list is part of the identity, so it must be known before the folder is named
    return Manifest.from_backbone(
        backbone.spec, dataset=dataset, root=images.root, n_images=len(images), images_sha256=images.sha256(),
        view=view.spec, shard_size=shard_size, precision=precision,
        label=RANDOM_INIT_LABEL if backbone.random_init else "", versions=_versions(),
    ).updated(extra)


def _to_host(t: torch.Tensor) -> torch.Tensor:
    """Start copying ``t`` to pinned host memory without waiting (GPU); a no-op on the CPU."""
    if t.device.type == "cpu":
        return t
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    host.copy_(t, non_blocking=True)
    return host


def extract(images: ImageList, backbone: Backbone, cache: str | os.PathLike, dataset: str,
            view: View | None = None, config: RunConfig | None = None, out: str | os.PathLike | None = None,
            manifest_extra: Mapping[str, Any] | None = None, log: Callable[[str], None] | None = None) -> RunSummary:
    """Extract what this rank still has to of the feature set for (images, backbone, view).

    That is its missing shards, or, when the dataset changed since a feature set was made from it, only
    the images no part of that set holds, as a new part of it (:mod:`attrib.grow`). The feature set lives
    at ``out`` if given, else at ``cache/<feature_set_name>`` (or the grown set's folder). Returns a
    summary; ``summary.feature_set`` is complete when ``summary.shards_left == 0``.
    """
    from attrib.grow import plan_extension

    cfg = config or RunConfig()
    view = view or View()
    if len(images) and 0 <= cfg.rank < cfg.world_size:  # else extract_shards says what is wrong
        manifest = build_manifest(images, backbone, dataset, view, cfg.shard_size or DEFAULT_SHARD_SIZE,
                                  cfg.precision, manifest_extra)
        ext = plan_extension(manifest, images, cache, out)
        if ext is not None:
            device = resolve_device(cfg.device)
            new_cfg = _part_config(cfg, ext.base.manifest, device)
            ext.check(manifest.replace(shard_size=new_cfg.shard_size,
                                       precision=resolve_precision(new_cfg.precision, device)))
            done = ext.run(lambda imgs, path, new: extract_shards(imgs, backbone, cache, dataset, view,
                                                                  new_cfg if new else cfg, path, manifest_extra, log))
            return RunSummary(FeatureSet.open(ext.folder), sum(s.images for s in done), sum(s.failed for s in done),
                              sum(s.seconds for s in done), sum(s.bytes_written for s in done),
                              sum(s.shards_written for s in done), ext.shards_left(),
                              shards_todo=sum(s.shards_todo for s in done),
                              repaired=[r for s in done for r in s.repaired],
                              claimed_elsewhere=[k for s in done for k in s.claimed_elsewhere], notes=ext.notes)
    return extract_shards(images, backbone, cache, dataset, view, cfg, out, manifest_extra, log)


def _part_config(cfg: RunConfig, base: Manifest, device: torch.device) -> RunConfig:
    """Run parameters of a new part: the feature set's shard size and precision unless given, as a resume
    adopts them."""
    return dataclasses.replace(cfg, shard_size=cfg.shard_size or base.shard_size,
                               precision=_adopt_precision(cfg.precision, base.precision, device))


def _adopt_precision(requested: str, cached: str | None, device: torch.device) -> str:
    """``--precision auto`` continues a feature set in the precision it was made with when that is fp32
    (never silently lowered) or on a GPU (which runs them all); otherwise the request stands."""
    if requested == "auto" and cached and (cached == "fp32" or device.type == "cuda"):
        return cached
    return requested


def extract_shards(images: ImageList, backbone: Backbone, cache: str | os.PathLike, dataset: str,
                   view: View | None = None, config: RunConfig | None = None, out: str | os.PathLike | None = None,
                   manifest_extra: Mapping[str, Any] | None = None,
                   log: Callable[[str], None] | None = None) -> RunSummary:
    """Extract every missing (or damaged) shard of this rank into the ordinary feature set for (images,
    backbone, view).

    The feature set lives at ``out`` if given, else at ``cache/<feature_set_name>``. Returns a summary;
    ``summary.feature_set`` is complete when ``summary.shards_left == 0``. ``log`` gets notes the user
    should see before the run starts (damaged shards about to be re-extracted).
    """
    from tqdm import tqdm

    cfg = config or RunConfig()
    view = view or View()
    device, precision = _check_run(cfg, images)
    fs, precision, repaired = _open_for_run(images, backbone, cache, dataset, view, cfg, device, precision, out,
                                            manifest_extra, log)
    sampler = ShardBatches(fs, fs.shards_todo(cfg.rank, cfg.world_size), cfg.batch_size)
    n_todo = sum(b - a for a, b in map(fs.shard_range, sampler.shards))
    backbone.to(device)
    loader = image_loader(ImageRows(images, backbone.transform, view, _input_shape(backbone)), sampler,
                          loader_workers(cfg.workers), pin_memory=device.type == "cuda")
    writer = ShardWriter(fs, sampler.release)
    t0 = time.perf_counter()
    desc = f"extract {fs.id}" + (f" [rank {cfg.rank}/{cfg.world_size}]" if cfg.world_size > 1 else "")
    bar = tqdm(total=n_todo, unit="img", desc=desc, disable=not cfg.progress, dynamic_ncols=True, smoothing=0.05)
    collect = Collector(fs, sampler, writer, bar)
    try:
        _forward_all(loader, backbone, device, autocast_for(precision, device), collect)
    finally:
        bar.close()
        try:
            writer.close()
        finally:
            sampler.release_all()
    seconds = time.perf_counter() - t0
    return RunSummary(fs, collect.done, collect.failed, seconds, writer.bytes, writer.shards, len(fs.shards_todo()),
                      len(sampler.shards), repaired, sampler.claimed_elsewhere)


def _check_run(cfg: RunConfig, images: ImageList) -> tuple[torch.device, str]:
    """Refuse run options that cannot work before anything is opened; the device and precision asked for."""
    if not 0 <= cfg.rank < cfg.world_size:
        raise ExtractError(f"--rank {cfg.rank} must be in [0, --world-size {cfg.world_size})")
    if cfg.batch_size < 1:
        raise ExtractError(f"--batch-size must be >= 1, got {cfg.batch_size}")
    if len(images) == 0:
        raise ExtractError("the image list is empty: nothing to extract")
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    if cfg.threads is not None:
        if cfg.threads < 1:
            raise ExtractError(f"--threads must be >= 1, got {cfg.threads}")
        torch.set_num_threads(cfg.threads)
    return device, precision


def _open_for_run(images: ImageList, backbone: Backbone, cache: str | os.PathLike, dataset: str, view: View,
                  cfg: RunConfig, device: torch.device, precision: str, out: str | os.PathLike | None,
                  manifest_extra: Mapping[str, Any] | None, log: Callable[[str], None] | None,
                  ) -> tuple[FeatureSet, str, list[tuple[int, str]]]:
    """Create or reopen the feature set and clean up after killed runs: (the set, the precision the run
    uses, which may be the cached one, the damaged shards removed for re-extraction).

    A resume without ``--shard-size`` (or with ``--precision auto``) adopts the cached run parameters.
    """
    shard_size = cfg.shard_size or DEFAULT_SHARD_SIZE
    manifest = build_manifest(images, backbone, dataset, view, shard_size, precision, manifest_extra)
    path = Path(out) if out else Path(cache) / manifest.folder_name
    if cfg.shard_size is None and FeatureSet.exists(path):
        prev = FeatureSet.open(path).manifest
        manifest = manifest.replace(shard_size=prev.shard_size)
        if _adopt_precision(cfg.precision, prev.precision, device) != cfg.precision:
            precision = prev.precision
            manifest = manifest.replace(precision=precision)
    fs = FeatureSet.create(path, manifest, images)
    fs.remove_stale_temp_files()  # left by killed writers of this host
    fs.remove_stale_claims()  # left by killed runs (the shards they claimed are extracted again if missing)
    repaired = fs.remove_damaged_shards(range(cfg.rank, fs.n_shards, cfg.world_size))
    if repaired and log is not None:
        log(f"re-extracting {len(repaired)} damaged shard(s) of {fs.path}: " + "; ".join(
            f"{fs.shard_path(k).name}: {why}" for k, why in repaired))
    return fs, precision, repaired


def _forward_all(loader: DataLoader, backbone: Backbone, device: torch.device, autocast: Any,
                 collect: Callable[[np.ndarray, list[str], np.ndarray, np.ndarray], None]) -> None:
    """One forward per batch. Its outputs (CLS tokens and embedding only) are copied to the host
    asynchronously and collected one batch later, so the GPU never waits for numpy and disk."""
    def finish(rows: np.ndarray, errors: list[str], cls: torch.Tensor, emb: torch.Tensor, event: Any) -> None:
        if event is not None:
            event.synchronize()
        collect(rows, errors, cls.float().numpy(), emb.float().numpy())

    pending = None
    for rows, x, errors in loader:
        x = x.to(device, non_blocking=True)
        with autocast:
            cls, emb = backbone.features(x)
        cls, emb = _to_host(cls), _to_host(emb)
        event = None
        if device.type == "cuda":
            event = torch.cuda.Event()
            event.record()
        if pending is not None:
            finish(*pending)
        pending = (rows.numpy(), list(errors), cls, emb, event)
    if pending is not None:
        finish(*pending)


def even_subset(images: ImageList, limit: int) -> ImageList:
    """``--limit N``: N rows spread evenly over the sorted list, so a trial still sees every source."""
    if limit <= 0:
        raise ExtractError(f"--limit must be positive, got {limit}")
    if limit >= len(images):
        return images
    idx = np.unique(np.floor(np.linspace(0, len(images) - 1, limit)).astype(int))
    return images.take(idx.tolist())

