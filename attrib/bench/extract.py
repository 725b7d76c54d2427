"""Stage-1 benchmarks: is extraction compute-bound, are cache reads disk-bound, how fast can the CPU decode?

1. Extraction overhead. The same images, batches and model, timed two ways, alternately (--repeats
   pairs; the ratio of each pair, then the median): the bare forward (``backbone.features`` on batches
   decoded beforehand, nothing else running) and the end-to-end run (``attrib.extract.runner.extract``:
   DataLoader workers decoding and transforming, the forward, the background shard writer, manifest,
   fsyncs). Goal: end-to-end <= 1.15 x bare forward, i.e. decoding, transforms and writing hidden behind
   compute. On a machine shared with other work, run-to-run noise can exceed the overhead measured.
   ``--device cuda`` runs both on a GPU (``--precision auto``: fp16 there, as ``attrib features``), the
   bare forward with the batches pinned and copied as a run copies them, waited for before the clock stops.
2. Block reads. A feature set of ``--rows`` rows (12 blocks x 768 dims, like ViT-B/16) is written with the
   real shard writer; then, with the files evicted from the page cache (posix_fadvise DONTNEED), we time
   (a) a raw sequential read of every shard file (8 MiB reads, bytes discarded) and (b)
   ``FeatureSet.block(7)``, which returns float32, once with numpy's fp16 cast (what a process without
   torch gets) and once with torch's (what a process that has torch loaded gets). Speeds are bytes on
   disk per second: all file bytes for (a), the block's fp16 bytes for (b). Goal: (b) >= 0.5 x (a).
   Warm (page-cached) numbers are printed too.

3. Decoding (no goal of its own): what the CPU can feed, i.e. ``load_rgb`` + the model's transform per core
   (one thread, in one process) for a JPEG photo and PNG generator outputs of 256 to 1024 px, and through
   the runner's DataLoader with its workers, every kind mixed, no model. Extraction cannot run faster than
   that second figure on the machine measured, whatever the accelerator; against the GPU goal (3000 img/s
   for ViT-B/16 on one H100-class GPU) it tells whether decoding on the GPU is worth building.

Temporary files go to a fresh folder under ``--dir`` (default: the system temp folder), removed at the end.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from attrib.manifest import PREPROCESSES

if TYPE_CHECKING:
    from attrib.store import FeatureSet

GOAL_EXTRACT = 1.15
GOAL_READ = 0.5
GOAL_GPU_RATE = 3000  # images/s end to end, ViT-B/16 on one H100-class GPU (issue 14)
# what the decode benchmark writes: a photo the size of most of ImageNet's, and generator outputs from 256
# to 1024 px; suffix, (width, height)
DECODE_KINDS = {"jpeg-500x375": ("jpg", (500, 375)), "png-256x256": ("png", (256, 256)),
                "png-512x512": ("png", (512, 512)), "png-1024x1024": ("png", (1024, 1024))}


def _write_image(path: Path, size: tuple[int, int], rng: np.random.Generator) -> None:
    """A smooth picture with sensor-like noise (compresses like a photo, unlike pure noise); JPEG at
    quality 90 or PNG, by the file's suffix."""
    from PIL import Image

    low = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    img = Image.fromarray(low).resize(size, Image.BICUBIC)
    noise = rng.normal(0, 6, (size[1], size[0], 3))
    img = Image.fromarray(np.clip(np.asarray(img) + noise, 0, 255).astype(np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **({"quality": 90} if path.suffix == ".jpg" else {}))


def _write_images(root: Path, n: int, seed: int = 0) -> None:
    """GenImage-like files: half 512x512 PNG ("generated"), half ~500x375 JPEG ("real"), smooth content."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        real = i % 2 == 0
        _write_image(root / ("real" if real else "gen") / (f"{i:05d}.jpg" if real else f"{i:05d}.png"),
                     (500, 375) if real else (512, 512), rng)


def _bare_forward(bb, decoded: list, device, autocast) -> float:
    """Seconds for the model alone over batches decoded beforehand: each copied to the device and run
    as a run runs it, then waited for (a GPU runs asynchronously)."""
    import torch

    t0 = time.perf_counter()
    for x in decoded:
        with autocast:
            bb.features(x.to(device, non_blocking=True))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def _device_name(device) -> str:
    import torch

    return (f"{torch.cuda.get_device_name(device)} ({device})" if device.type == "cuda"
            else f"CPU ({os.cpu_count()} cores)")


def bench_extract(args: argparse.Namespace, tmp: Path, bb) -> float:
    import torch
    from torch.utils.data import DataLoader

    from attrib.data.catalog import read_folder
    from attrib.extract.runner import (ImageRows, RunConfig, _input_shape, autocast_for, extract, loader_workers,
                                       resolve_device, resolve_precision)
    from attrib.extract.views import View

    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    _write_images(tmp / "images", args.images)
    images = read_folder(tmp / "images")
    cfg = RunConfig(batch_size=args.batch_size, workers=args.workers, device=str(device), precision=precision,
                    shard_size=args.shard_size, threads=args.threads, progress=False)

    # the batches the runner will form (never crossing a shard), decoded up front (pinned for a GPU, as the
    # runner's DataLoader pins them)
    n, S, B = len(images), args.shard_size, args.batch_size
    batches = [list(range(b, min(b + B, s + S, n))) for s in range(0, n, S) for b in range(s, min(s + S, n), B)]
    rows = ImageRows(images, bb.transform, View(), _input_shape(bb))
    decoded = [x for _, x, _ in DataLoader(rows, batch_sampler=batches, num_workers=0)]
    if device.type == "cuda":
        decoded = [x.pin_memory() for x in decoded]
    bb.to(device)
    autocast = autocast_for(precision, device)

    bare, e2e = [], []
    for rep in range(args.repeats):  # alternate, so that load from other processes hits both alike
        if args.threads:
            torch.set_num_threads(args.threads)
        # warm-up, out of both timings: first-call allocations (a GPU also picks its kernels per shape)
        _bare_forward(bb, [decoded[0] if device.type == "cuda" else decoded[0][:2]], device, autocast)
        bare.append(_bare_forward(bb, decoded, device, autocast))
        t0 = time.perf_counter()
        summary = extract(images, bb, tmp / f"cache{rep}", "bench", config=cfg)
        e2e.append(time.perf_counter() - t0)
        assert summary.images == len(images) and summary.shards_left == 0
    ratios = [e / b for e, b in zip(e2e, bare)]
    ratio = statistics.median(ratios)
    print(f"[extract] {args.model} ({args.pretrained}) on {_device_name(device)}, {precision}, {n} images "
          f"(half 512x512 PNG, half 500x375 JPEG) -> {_input_shape(bb)[1]} px, batch {B}, shard {S}, "
          f"workers {loader_workers(cfg.workers)} on {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    print("[extract] bare forward:  " + ", ".join(f"{t:.1f} s" for t in bare) + f"  ({n / min(bare):.2f} img/s best)")
    print("[extract] end-to-end:    " + ", ".join(f"{t:.1f} s" for t in e2e) + f"  ({n / min(e2e):.2f} img/s best)")
    print("[extract] end-to-end / bare forward, run by run: " + ", ".join(f"{r:.3f}" for r in ratios) +
          f"; median {ratio:.3f} (goal <= {GOAL_EXTRACT}) -> {'MET' if ratio <= GOAL_EXTRACT else 'NOT MET'}")
    return ratio


def _best(step, items: list, repeats: int) -> float:
    """Best of ``repeats`` timings of ``step`` over every item in turn, in seconds per item."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for item in items:
            step(item)
        best = min(best, time.perf_counter() - t0)
    return best / len(items)


def _row_ok(rows, i: int) -> None:
    """One row as a worker makes it; every bench image must decode, or the rate would be that of failures."""
    _, _, err = rows[i]
    assert not err, f"bench image {rows.images.paths[i]} failed: {err}"


def _loader_rate(rows, batch_size: int, images: int, workers: int) -> tuple[float, int]:
    """Images per second through the runner's DataLoader (no model), counted from the first batch on so
    that starting the workers is left out; the rows are cycled until ``images`` have been loaded."""
    import torch

    from attrib.extract.runner import image_loader

    order = [i % len(rows) for i in range(max(images, 2 * batch_size))]
    batches = [order[a:a + batch_size] for a in range(0, len(order), batch_size)]
    loader = image_loader(rows, batches, workers, pin_memory=torch.cuda.is_available())
    seen, t_first = 0, 0.0
    for k, (_, x, err) in enumerate(loader):
        assert not any(err), f"a bench image failed: {[e for e in err if e][0]}"
        if k == 0:
            t_first = time.perf_counter()
        else:
            seen += len(x)
    return seen / (time.perf_counter() - t_first), seen


def bench_decode(args: argparse.Namespace, tmp: Path, bb) -> float:
    """What the CPU can feed: ``load_rgb`` + the model's transform (a DataLoader worker's job), per core
    and through the runner's DataLoader with its workers, no model. Extraction can never run faster than
    the second figure, whatever the accelerator: on a GPU machine it says whether decoding is the
    bottleneck before a GPU decoder is worth building."""
    import torch

    from attrib.data.catalog import read_folder
    from attrib.data.images import load_rgb
    from attrib.extract.runner import ImageRows, _input_shape, loader_workers
    from attrib.extract.views import View

    shape = _input_shape(bb)
    rng = np.random.default_rng(1)
    root = tmp / "decode"
    for kind, (suffix, size) in DECODE_KINDS.items():
        for i in range(args.decode_images):
            _write_image(root / kind / "images" / f"{i:05d}.{suffix}", size, rng)  # a source per kind
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what one worker process gets
    try:
        per_image = {}  # kind -> (decode, transform, whole row) seconds
        for kind in DECODE_KINDS:
            rows = ImageRows(read_folder(root / kind), bb.transform, View(), shape)
            _row_ok(rows, 0)  # warm-up: first-call imports and allocations
            paths = [rows.images.abspath(i) for i in range(len(rows))]
            decoded = [load_rgb(p) for p in paths]
            per_image[kind] = (_best(load_rgb, paths, args.repeats), _best(bb.transform, decoded, args.repeats),
                               _best(partial(_row_ok, rows), list(range(len(rows))), args.repeats))
    finally:
        torch.set_num_threads(threads)
    workers = loader_workers(args.workers)
    every = ImageRows(read_folder(root), bb.transform, View(), shape)
    rate, seen = _loader_rate(every, args.batch_size, args.loader_images, workers)
    print(f"[decode] {args.model} preprocess {args.preprocess!r} -> {'x'.join(map(str, shape))}, "
          f"{args.decode_images} images of each kind, best of {args.repeats}, one thread, in one process "
          f"(decode: load_rgb; transform: the model's, on the decoded image):")
    for kind, (dec, trans, row) in per_image.items():
        print(f"[decode]   {kind:>13}: decode {1000 * dec:5.1f} ms + transform {1000 * trans:5.1f} ms; a worker's row "
              f"{1000 * row:5.1f} ms = {1 / row:6.1f} img/s per core; {GOAL_GPU_RATE} img/s needs "
              f"{math.ceil(GOAL_GPU_RATE * row)} cores")
    print(f"[decode] the runner's DataLoader, {workers} worker(s) on {os.cpu_count()} cores, equal numbers of "
          f"each kind, {seen} images after the first batch, no model: {rate:.1f} img/s (extraction on this machine "
          f"cannot run faster; the GPU goal needs {GOAL_GPU_RATE})")
    return rate


def _evict(paths: list[Path]) -> bool:
    """Drop the files from the page cache (their pages are clean: the writer fsynced them)."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def _raw_read(paths: list[Path]) -> tuple[int, float]:
    buf = bytearray(8 << 20)
    total = 0
    t0 = time.perf_counter()
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                total += n
    return total, time.perf_counter() - t0


def _bench_feature_set(n: int, tmp: Path) -> FeatureSet:
    """A ViT-B/16-shaped feature set of ``n`` rows of random features, written and timed as a run writes
    its shards (checksums, fsync, hard-link publishing)."""
    from attrib.data.catalog import ImageList
    from attrib.manifest import Manifest
    from attrib.store import FeatureSet

    L, D, E, S = 12, 768, 512, 10_000
    images = ImageList([f"img/{i:07d}.png" for i in range(n)], ["gen"] * n, ["train"] * n)
    manifest = Manifest(dataset="bench", family="open_clip", model="ViT-B-16", weights="synthetic",
                        weights_sha256="", quick_gelu=False, preprocess={}, view="none", n_blocks=L, width=D,
                        embed_dim=E, shard_size=S, precision="fp32")
    fs = FeatureSet.create(tmp / "fs", manifest, images)
    rng = np.random.default_rng(0)
    base = rng.standard_normal((min(S, n), L, D), dtype=np.float32).astype(np.float16)
    emb = rng.standard_normal((min(S, n), E), dtype=np.float32).astype(np.float16)
    t0 = time.perf_counter()
    for k in range(fs.n_shards):
        a, b = fs.shard_range(k)
        fs.write_shard(k, base[: b - a] + np.float16(k), emb[: b - a], np.ones(b - a, bool), [""] * (b - a))
    write_s = time.perf_counter() - t0
    size = sum(fs.shard_path(k).stat().st_size for k in range(fs.n_shards))
    print(f"[read] {n} rows x {L} blocks x {D} dims fp16 in {fs.n_shards} shards, {size / 1e9:.2f} GB "
          f"(written in {write_s:.1f} s = {size / write_s / 1e6:.0f} MB/s incl. checksums and fsync)")
    return fs


def bench_read(args: argparse.Namespace, tmp: Path) -> float:
    n = args.rows
    fs = _bench_feature_set(n, tmp)
    paths = [fs.shard_path(k) for k in range(fs.n_shards)]
    D = fs.width
    block_bytes = n * D * 2
    import torch  # noqa: F401  (loaded, so that the torch-cast path can be measured too)

    from attrib import shard_io

    def block_speed(cold: bool) -> float:
        if cold:
            _evict(paths)
        t0 = time.perf_counter()
        x = fs.block(7)
        dt = time.perf_counter() - t0
        assert x.shape == (n, D) and x.dtype == np.float32
        return block_bytes / dt

    can_evict = _evict(paths)
    if not can_evict:
        print("[read] posix_fadvise unavailable: cannot evict the page cache, cold numbers skipped")
    result = float("nan")
    for state in (("cold", "warm") if can_evict else ("warm",)):
        cold = state == "cold"
        raw, numpy_cast, torch_cast = [], [], []
        for _ in range(args.repeats):
            if cold:
                _evict(paths)
            total, t = _raw_read(paths)
            raw.append(total / t)
            shard_io.TORCH_CAST = False
            numpy_cast.append(block_speed(cold))
            shard_io.TORCH_CAST = None
            if "torch" in sys.modules:
                torch_cast.append(block_speed(cold))
        r = statistics.median(raw)
        line = f"[read] {state}: raw sequential read {r / 1e6:.0f} MB/s; block(7) "
        parts = [("numpy cast", numpy_cast), ("torch cast", torch_cast)]
        line += "; ".join(f"{name} {statistics.median(v) / 1e6:.0f} MB/s = {statistics.median(v) / r:.2f}x"
                          for name, v in parts if v)
        best = max(statistics.median(v) for _, v in parts if v) / r
        if cold:
            result = best
            verdict = ("MET" if statistics.median(numpy_cast) / r >= GOAL_READ else
                       "MET with torch's cast only" if best >= GOAL_READ else "NOT MET")
            line += f" (medians of {args.repeats}; goal >= {GOAL_READ}x) -> {verdict}"
        else:
            line += " (page cache: a memory copy vs fp16->fp32 conversion; no goal)"
        print(line)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m attrib.bench.extract", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["extract", "read", "decode"], help="run one of the three benchmarks")
    ap.add_argument("--images", type=int, default=64, help="images for the extraction benchmark")
    ap.add_argument("--model", default="ViT-B-16")
    ap.add_argument("--pretrained", default="random-init")
    ap.add_argument("--device", default="cpu",
                    help="where the extraction benchmark runs the model: cpu, cuda, cuda:N or auto (default: cpu)")
    ap.add_argument("--precision", default="auto",
                    help="as `attrib features --precision`: auto (fp16 on a GPU, fp32 on the CPU), fp32, fp16, bf16")
    ap.add_argument("--preprocess", choices=PREPROCESSES, default="model",
                    help="the preprocessing, as `attrib features --preprocess` (default: model)")
    ap.add_argument("--decode-images", type=int, default=32, help="images of each kind for the decode benchmark")
    ap.add_argument("--loader-images", type=int, default=1000,
                    help="images the decode benchmark pulls through the DataLoader (its images, cycled)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the runner's)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the runner's)")
    ap.add_argument("--rows", type=int, default=100_000, help="rows of the read benchmark's feature set")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default=None, help="parent folder for temporary files (default: system temp)")
    args = ap.parse_args(argv if argv is not None else None)
    tmp = Path(tempfile.mkdtemp(prefix="attrib-bench-extract-", dir=args.dir))
    try:
        if args.only in (None, "extract", "decode"):  # one model load for both (ViT-B/16: tens of seconds)
            from attrib.extract.backbone import load_backbone
            from attrib.extract.runner import resolve_device

            if args.only in (None, "extract"):
                resolve_device(args.device)  # a device this machine lacks fails before the load, not after
            bb = load_backbone(args.model, args.pretrained, args.preprocess)
        if args.only in (None, "extract"):
            bench_extract(args, tmp, bb)
        if args.only in (None, "decode"):
            bench_decode(args, tmp, bb)
        if args.only in (None, "read"):
            bench_read(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
