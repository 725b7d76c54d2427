"""Growing a feature set: what an extension costs next to a full re-extraction, and what it adds to reads.

Two measurements, both in a temporary folder deleted afterwards:

model
    A folder dataset of ``--images`` random PNGs is extracted with ``attrib-tiny`` on the CPU; then
    ``--new`` images arrive in a new generator folder. Timed: the rerun (only the new images go through
    the model; the rest is finding the set, planning and publishing the index) against a full extraction
    of the grown dataset into an empty cache.
store
    A feature set of ``--rows`` images (one block of 8 dims: the arrays are not the point, the image list
    is) grows by ``--new-rows``. Timed: finding the set and planning, publishing the index, reading the
    union's image list, and reading one block of the union against the first part alone. These are what
    an extension of a GenImage-sized cache (2.7M images) adds to the forward passes of its new images.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from attrib.data.catalog import ImageList
from attrib.manifest import Manifest


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def bench_model(tmp: Path, n_images: int, n_new: int, size: int) -> None:
    from PIL import Image

    from attrib.data.catalog import read_folder
    from attrib.extract.backbone import load_backbone
    from attrib.extract.runner import RunConfig, extract

    def photos(folder: str, n: int, seed: int) -> None:
        (tmp / "data" / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = np.random.default_rng(seed + i).integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp / "data" / folder / f"{i:05d}.png")

    for g in range(4):
        photos(f"gen{g}", n_images // 4, 10_000 * g)
    backbone = load_backbone("attrib-tiny", None)
    cfg = RunConfig(workers=0, progress=False, shard_size=1000)

    def run(cache: str):
        return extract(read_folder(tmp / "data"), backbone, tmp / cache, "data", config=cfg,
                       manifest_extra={"dataset_kind": "folder"})

    first, t_first = _timed(lambda: run("cache"))
    photos("new_generator", n_new, 99_000)
    grown, t_grown = _timed(lambda: run("cache"))
    full, t_full = _timed(lambda: run("fresh"))
    print(f"model: {first.images} images extracted in {t_first:.1f} s; {n_new} new arrive:")
    print(f"  rerun (grows the set): {grown.images} images through the model, {t_grown:.2f} s in all "
          f"({grown.seconds:.2f} s extracting)")
    print(f"  full re-extraction:    {full.images} images through the model, {t_full:.2f} s "
          f"({t_full / max(t_grown, 1e-9):.1f}x the rerun)")


def bench_store(tmp: Path, n_rows: int, n_new: int) -> None:
    from attrib.grow import plan_extension
    from attrib.store import FeatureSet

    shard = 100_000
    m = Manifest.coerce({"dataset": "big", "dataset_kind": "folder", "root": "/data/big", "family": "open_clip",
                         "model": "m", "weights": "w", "weights_sha256": "", "quick_gelu": False,
                         "preprocess": {"size": 8}, "view": "none", "n_blocks": 1, "width": 8, "embed_dim": 4,
                         "shard_size": shard, "precision": "fp32"})

    def listed(rows: list[tuple[str, str, str]]) -> tuple[ImageList, Manifest]:
        images = ImageList.from_rows(rows, root="/data/big")
        return images, m.replace(images_sha256=images.sha256(), n_images=len(images))

    def fill(fs: FeatureSet) -> None:
        for k in range(fs.n_shards):
            a, b = fs.shard_range(k)
            fs.write_shard(k, np.random.default_rng(k).standard_normal((b - a, 1, 8)).astype(np.float16),
                           np.zeros((b - a, 4), np.float16), np.ones(b - a, bool), [""] * (b - a))

    rows = [(f"gen{g}/train/ai/{i:08d}.png", f"gen{g}", "train") for g in range(8) for i in range(n_rows // 8)]
    images, manifest = listed(rows)
    base = FeatureSet.create(tmp / "cache" / manifest.folder_name, manifest, images)
    fill(base)
    new_images, new_manifest = listed(rows + [(f"new/train/ai/{i:08d}.png", "new", "train") for i in range(n_new)])
    ext, t_find = _timed(lambda: plan_extension(new_manifest, new_images, tmp / "cache"))
    targets, t_plan = _timed(ext.plan)
    ((part_images, part_path, _),) = targets
    fill(FeatureSet.create(part_path, m.replace(images_sha256=part_images.sha256(), n_images=n_new), part_images))
    _, t_publish = _timed(ext.publish)
    grown = FeatureSet.open(base.path)
    _, t_list = _timed(lambda: grown.images)
    _, t_block = _timed(lambda: grown.block(0))
    _, t_base = _timed(lambda: FeatureSet.open(base.path, whole=False).block(0))
    _, t_again = _timed(lambda: plan_extension(new_manifest, new_images, tmp / "cache").run(lambda *a: None))
    mb = grown.index_file.stat().st_size / 1e6
    print(f"store: {len(images)} images grown by {n_new}:")
    print(f"  find the set {t_find:.2f} s, plan {t_plan:.2f} s, publish the index {t_publish:.2f} s ({mb:.0f} MB)")
    print(f"  read the union's image list {t_list:.2f} s; block(0) of the union {t_block:.2f} s, of the first "
          f"part alone {t_base:.2f} s")
    print(f"  rerun with nothing new (find the set, see nothing to do) {t_again:.2f} s")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m attrib.bench grow", description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=400, help="model: images extracted first (four generators)")
    ap.add_argument("--new", type=int, default=40, help="model: images of the new generator")
    ap.add_argument("--size", type=int, default=64, help="model: image side in pixels")
    ap.add_argument("--rows", type=int, default=1_000_000, help="store: images of the feature set")
    ap.add_argument("--new-rows", type=int, default=10_000, help="store: images added")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="attrib-bench-grow-"))
    try:
        bench_model(tmp / "model", args.images, args.new, args.size)
        bench_store(tmp / "store", args.rows, args.new_rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
