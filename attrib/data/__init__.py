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
from attrib.data.filenames import as_label

DATASETS = ("demo", "genimage", "folder", "list")
DEFAULT_DEMO_ROOT = "data/demo"


def open_dataset(kind: str, root: str | os.PathLike | None = None, list_file: str | os.PathLike | None = None,
                 progress: bool = False, build_demo: bool = False) -> tuple[ImageList, str]:
    """(image list, dataset name) for ``--dataset kind``; the demo is built on first use.

    The name goes into the cache manifest and folder name: ``demo`` and ``genimage`` keep their kind
    (probe uses it to find the built-in splits); a folder or list is named after the folder or file
    (as text: bytes that are not UTF-8 are escaped, see :mod:`attrib.data.filenames`).
    Options that do not apply to ``kind`` are refused, never ignored: ``list_file`` is for ``list``,
    ``build_demo`` for ``demo``.
    """
    if list_file and kind != "list":
        raise CatalogError(f"--list applies only to --dataset list (a file of path<TAB>source lines), not to "
                           f"--dataset {kind}; drop --list, or use --dataset list --list {os.fspath(list_file)}")
    if build_demo and kind != "demo":
        raise CatalogError(f"--build-demo applies only to --dataset demo, not to --dataset {kind}")
    if kind == "demo":
        return _open_demo(root, progress, build_demo), "demo"
    if kind == "genimage":
        if not root:
            raise CatalogError("--dataset genimage needs --root DIR (the folder holding ADM/, BigGAN/, ...)")
        from attrib.data.genimage import read_genimage

        return read_genimage(resolve_root(root), progress=progress), "genimage"
    if kind == "folder":
        if not root:
            raise CatalogError("--dataset folder needs --root DIR (one sub-folder per source)")
        root = resolve_root(root)
        return read_folder(root, progress=progress), as_label(Path(root).name)
    if kind == "list":
        if not list_file:
            raise CatalogError("--dataset list needs --list FILE (path<TAB>source[<TAB>subset] per line)")
        images = read_list(list_file, resolve_root(root) if root else None)
        return images, as_label(Path(list_file).stem)
    raise CatalogError(f"--dataset {kind!r}: use one of {', '.join(DATASETS)}")


def _open_demo(root: str | os.PathLike | None, progress: bool, build: bool) -> ImageList:
    """The demo's image list; the demo is built first where it is missing, if that is what was asked.

    Only the default root (data/demo) is built without being asked: a mistyped ``--root`` must not
    silently build (and then extract) a second demo somewhere else. Any other root must hold a demo,
    or ``--build-demo`` asks for one there. An existing demo (of any size) is used as it is.
    """
    from attrib.data.demo import build_demo, is_demo
    from attrib.data.genimage import read_genimage

    root = os.fspath(root or DEFAULT_DEMO_ROOT)
    if not is_demo(root):
        default = resolve_root(root) == resolve_root(DEFAULT_DEMO_ROOT)
        if not (default or build or os.path.exists(root)):
            raise CatalogError(f"--root {root!r} does not exist, so it holds no demo dataset (mistyped?). The demo "
                               f"is built on first use only at {DEFAULT_DEMO_ROOT}; to build one at {root}, add "
                               "--build-demo")
        build_demo(root, progress=progress)
    return read_genimage(resolve_root(root), progress=False)


__all__ = ["DATASETS", "ImageList", "CatalogError", "open_dataset"]
