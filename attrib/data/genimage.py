"""GenImage facts: generator folders, their canonical names, and the paper's five open-set splits.

GenImage ships one archive per generator; unpacked, a generator folder holds either
``train/{ai,nature}`` and ``val/{ai,nature}`` directly, or one more level named after the archive
(``BigGAN/imagenet_ai_0419_biggan/train/ai``). Both layouts map to the same image list.
"""

from __future__ import annotations

import os
import re
import sys

from attrib.data.catalog import REAL, CatalogError, ImageList, walk_images

GENERATORS = (
    "ADM", "BigGAN", "glide", "Midjourney",
    "stable_diffusion_v_1_4", "stable_diffusion_v_1_5", "VQDM", "wukong",
)

# Folder-name spellings seen in GenImage releases (top-level folders and archive folders), lower-cased.
_ALIASES = {
    "adm": "ADM", "imagenet_ai_0508_adm": "ADM",
    "biggan": "BigGAN", "imagenet_ai_0419_biggan": "BigGAN",
    "glide": "glide", "imagenet_glide": "glide",
    "midjourney": "Midjourney", "imagenet_midjourney": "Midjourney",
    "stable_diffusion_v_1_4": "stable_diffusion_v_1_4", "sdv4": "stable_diffusion_v_1_4",
    "sdv1.4": "stable_diffusion_v_1_4", "imagenet_ai_0419_sdv4": "stable_diffusion_v_1_4",
    "stable_diffusion_v_1_5": "stable_diffusion_v_1_5", "sdv5": "stable_diffusion_v_1_5",
    "sdv1.5": "stable_diffusion_v_1_5", "imagenet_ai_0424_sdv5": "stable_diffusion_v_1_5",
    "vqdm": "VQDM", "imagenet_ai_0419_vqdm": "VQDM",
    "wukong": "wukong", "imagenet_ai_0424_wukong": "wukong",
}

# The paper's open-set splits: known = real + 4 generators, unknown = the other 4.
SPLITS: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {
    1: (("wukong", "Midjourney", "VQDM", "stable_diffusion_v_1_4"),
        ("stable_diffusion_v_1_5", "BigGAN", "ADM", "glide")),
    2: (("Midjourney", "VQDM", "stable_diffusion_v_1_4", "ADM"),
        ("wukong", "stable_diffusion_v_1_5", "BigGAN", "glide")),
    3: (("VQDM", "stable_diffusion_v_1_4", "ADM", "BigGAN"),
        ("wukong", "stable_diffusion_v_1_5", "Midjourney", "glide")),
    4: (("stable_diffusion_v_1_4", "ADM", "BigGAN", "glide"),
        ("wukong", "stable_diffusion_v_1_5", "VQDM", "Midjourney")),
    5: (("ADM", "BigGAN", "glide", "stable_diffusion_v_1_5"),
        ("wukong", "stable_diffusion_v_1_4", "VQDM", "Midjourney")),
}


def canonical_generator(folder: str) -> str | None:
    """Canonical generator name for a GenImage folder name, or None when it is not one."""
    name = folder.strip().lower()
    if name in _ALIASES:
        return _ALIASES[name]
    m = re.fullmatch(r"imagenet_(?:ai_\d+_)?(.+)", name)
    return _ALIASES.get(m.group(1)) if m else None


def read_genimage(root: str | os.PathLike, progress: bool = False) -> ImageList:
    """List every image under ``<generator>/[<archive>/]{train,val}/{ai,nature}/`` without opening any.

    ``ai`` images get the canonical generator name as source (folders with other names keep their
    name, so custom generators in this layout work too), ``nature`` images the source ``real``.
    """
    from tqdm import tqdm

    root = os.fspath(root)
    if not os.path.isdir(root):
        raise CatalogError(f"--root {root!r} is not a folder")
    tops = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    rows = []
    empty = []
    bar = tqdm(desc="listing GenImage", unit=" files", disable=not progress, mininterval=1.0)
    for top in tops:
        gen = canonical_generator(top) or top  # unknown names are kept: custom generators in this layout
        before = len(rows)
        for path in walk_images(os.path.join(root, top)):
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            parts = rel.split("/")[1:-1]
            subset = next((p for p in parts if p in ("train", "val")), None)
            kind = next((p for p in parts if p in ("ai", "nature")), None)
            if subset is None or kind is None:
                continue  # README files, previews etc. outside {train,val}/{ai,nature}
            rows.append((rel, gen if kind == "ai" else REAL, subset))
            bar.update()
        if len(rows) == before:
            empty.append(top)
    bar.close()
    if not rows:
        raise CatalogError(
            f"{root}: no images under <generator>/[<archive>/]{{train,val}}/{{ai,nature}}/ "
            f"(expected generator folders such as {', '.join(GENERATORS[:3])}, ...; found: "
            f"{', '.join(tops) or 'nothing'})")
    if empty and progress:
        print(f"note: no images in GenImage layout under: {', '.join(empty)}", file=sys.stderr)
    return ImageList.from_rows(rows, root, where=root)
