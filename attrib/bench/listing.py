"""Listing speed: how long `attrib features --dataset genimage` takes to find every image.

Builds a synthetic GenImage tree of empty files (both layouts, all eight generators) in a temporary
folder, lists it with :func:`attrib.data.genimage.read_genimage` and with ``--dataset folder``'s reader,
reports files/s and the time this rate implies for GenImage's ~2.7M files, then deletes the tree.
The page cache is warm (the files were just created): on a cold network file system, expect the rate
to be bounded by the file server instead.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from attrib.data.catalog import read_folder
from attrib.data.genimage import ARCHIVES, read_genimage

GENIMAGE_FILES = 2_700_000


def build_tree(root: str, n_files: int) -> int:
    """``n_files`` empty files over 8 generators x {train,val} x {ai,nature}; odd generators nested.

    Files are hard links to a few empty files (ten times faster to create than new inodes; listing
    reads names only, so it cannot tell the difference). ext4 allows 65000 links per inode.
    """
    per_folder = max(1, n_files // (len(ARCHIVES) * 4))
    os.makedirs(root)
    n = 0
    for i, (gen, archive) in enumerate(ARCHIVES.items()):
        base = os.path.join(root, gen, archive) if i % 2 else os.path.join(root, gen)
        for subset in ("train", "val"):
            for kind in ("ai", "nature"):
                d = os.path.join(base, subset, kind)
                os.makedirs(d)
                for k in range(per_folder):
                    name = f"{k}_{gen.lower()}_{k}.PNG" if kind == "ai" else f"n{k:08d}_{k}.JPEG"
                    if n % 60_000 == 0:
                        empty = os.path.join(root, f".empty-{n}")
                        open(empty, "wb").close()
                    try:
                        os.link(empty, os.path.join(d, name))
                    except OSError:  # a file system without hard links
                        open(os.path.join(d, name), "wb").close()
                    n += 1
    return n


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m attrib.bench listing", description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=200_000, help="synthetic files to create (default 200000)")
    ap.add_argument("--dir", default=None, help="where to build the tree (default: a temporary folder)")
    args = ap.parse_args(argv)
    top = tempfile.mkdtemp(prefix="attrib-bench-listing-", dir=args.dir)
    try:
        t0 = time.perf_counter()
        n = build_tree(os.path.join(top, "GenImage"), args.files)
        print(f"built {n} empty files in {time.perf_counter() - t0:.1f} s ({top})")
        for name, fn in (("genimage", read_genimage), ("folder", read_folder)):
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                images = fn(os.path.join(top, "GenImage"))
                best = min(best, time.perf_counter() - t0)
            assert len(images) == n, (len(images), n)
            rate = n / best
            print(f"listing --dataset {name}: {n} files in {best:.2f} s = {rate:,.0f} files/s "
                  f"(~{GENIMAGE_FILES / rate:.0f} s for GenImage's {GENIMAGE_FILES / 1e6:.1f}M files)")
    finally:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
