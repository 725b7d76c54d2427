"""What images exist and what they are: every dataset kind ends in one :class:`ImageList`.

Where things live:

- ``catalog``: the image list, folder and list-file readers, seeded per-source sampling;
- ``genimage``, ``demo``: GenImage's layout and the paper's five splits; the built-in demo dataset;
- ``images``: decoding one image file;
- ``pathmatch``: which listed image a path written elsewhere (a split file) refers to;
- ``splits``: what an open-set split is (:class:`~attrib.data.splits.Split`, ``SplitRows``,
  ``SplitSource``), the built-in splits and ``--splits`` selection;
- ``splitfile``: splits defined in a YAML/JSON ``--split-file``;
- ``sampling``: the seeded sampling protocol for built-in and ``--split-file`` splits;
- ``pose``: the paper's own split files (``--splits-dir``), for probing and for stage 1.
"""

from __future__ import annotations

import os
from pathlib import Path

from attrib.data.catalog import CatalogError, ImageList, read_folder, read_list, resolve_root

DATASETS = ("demo", "genimage", "folder", "list")
DEFAULT_DEMO_ROOT = "data/demo"


def open_dataset(kind: str, root: str | os.PathLike | None = None, list_file: str | os.PathLike | None = None,
                 progress: bool = False) -> tuple[ImageList, str]:
    """(image list, dataset name) for ``--dataset kind``; the demo is built on first use.

    The name goes into the cache manifest and folder name: ``demo`` and ``genimage`` keep their kind
    (probe uses it to find the built-in splits); a folder or list is named after the folder or file.
    """
    if kind == "demo":
        from attrib.data.demo import build_demo, is_demo
        from attrib.data.genimage import read_genimage

        root = root or DEFAULT_DEMO_ROOT
        if not is_demo(root):  # an existing demo (of any size) is used as it is
            build_demo(root, progress=progress)
        root = resolve_root(root)
        return read_genimage(root, progress=False), "demo"
    if kind == "genimage":
        if not root:
            raise CatalogError("--dataset genimage needs --root DIR (the folder holding ADM/, BigGAN/, ...)")
        from attrib.data.genimage import read_genimage

        return read_genimage(resolve_root(root), progress=progress), "genimage"
    if kind == "folder":
        if not root:
            raise CatalogError("--dataset folder needs --root DIR (one sub-folder per source)")
        root = resolve_root(root)
        return read_folder(root, progress=progress), Path(root).name
    if kind == "list":
        if not list_file:
            raise CatalogError("--dataset list needs --list FILE (path<TAB>source[<TAB>subset] per line)")
        images = read_list(list_file, resolve_root(root) if root else None)
        return images, Path(list_file).stem
    raise CatalogError(f"--dataset {kind!r}: use one of {', '.join(DATASETS)}")


__all__ = ["DATASETS", "ImageList", "CatalogError", "open_dataset"]
