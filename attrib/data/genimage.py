"""GenImage facts: generator folders, their canonical names, and the paper's five open-set splits.

GenImage (Zhu et al., NeurIPS 2023) ships one archive per generator. Unpacked, a generator folder holds
either ``train/{ai,nature}`` and ``val/{ai,nature}`` directly (the layout the paper's repository
documents), or one more level named after the archive::

    ADM/imagenet_ai_0508_adm/train/ai/*.PNG          stable_diffusion_v_1_4/imagenet_ai_0419_sdv4/...
    BigGAN/imagenet_ai_0419_biggan/...               stable_diffusion_v_1_5/imagenet_ai_0424_sdv5/...
    glide/imagenet_glide/...                         VQDM/imagenet_ai_0419_vqdm/...
    Midjourney/imagenet_midjourney/...               wukong/imagenet_ai_0424_wukong/...

Re-packaged copies (e.g. "tiny GenImage" on Kaggle) put the archive folders at the top with no
generator folder above them. All of these give the same sources: ``ai`` images are named after their
generator (canonical spelling below), ``nature`` images are ``real``. ``val/`` is GenImage's held-out
part and serves as the test set (see :mod:`attrib.data.sampling`).
"""

from __future__ import annotations

import os
import re
import sys

from attrib.data.catalog import REAL, CatalogError, ImageList, _bar, scan_images, top_folders
from attrib.data.filenames import Skipped, as_label

GENERATORS = (
    "ADM", "BigGAN", "glide", "Midjourney",
    "stable_diffusion_v_1_4", "stable_diffusion_v_1_5", "VQDM", "wukong",
)

# The archive (and unpacked folder) name of each generator in the GenImage release.
ARCHIVES = {
    "ADM": "imagenet_ai_0508_adm", "BigGAN": "imagenet_ai_0419_biggan", "glide": "imagenet_glide",
    "Midjourney": "imagenet_midjourney", "stable_diffusion_v_1_4": "imagenet_ai_0419_sdv4",
    "stable_diffusion_v_1_5": "imagenet_ai_0424_sdv5", "VQDM": "imagenet_ai_0419_vqdm",
    "wukong": "imagenet_ai_0424_wukong",
}

# Other spellings seen in papers and re-packaged copies (lower-cased); archive names map through ARCHIVES.
_ALIASES = {
    **{g.lower(): g for g in GENERATORS},
    **{a: g for g, a in ARCHIVES.items()},
    "sdv4": "stable_diffusion_v_1_4", "sdv1.4": "stable_diffusion_v_1_4", "sd14": "stable_diffusion_v_1_4",
    "sd_v1_4": "stable_diffusion_v_1_4", "stable_diffusion_v1_4": "stable_diffusion_v_1_4",
    "sdv5": "stable_diffusion_v_1_5", "sdv1.5": "stable_diffusion_v_1_5", "sd15": "stable_diffusion_v_1_5",
    "sd_v1_5": "stable_diffusion_v_1_5", "stable_diffusion_v1_5": "stable_diffusion_v_1_5",
    "vq-diffusion": "VQDM", "vqdiffusion": "VQDM",
}

SUBSETS = ("train", "val")
KINDS = ("ai", "nature")

# The paper's open-set splits: known = real + 4 generators, unknown = the other 4. The order of the
# known generators is the label order of the paper's split files (label 0 = real, then these).
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
    """Canonical generator name for a GenImage folder or archive name, or None when it is not one."""
    name = folder.strip().lower()
    if name.endswith((".zip", ".tar")):
        name = name.rsplit(".", 1)[0]
    if name in _ALIASES:
        return _ALIASES[name]
    m = re.fullmatch(r"imagenet_(?:ai_\d+_)?(.+)", name)
    return _ALIASES.get(m.group(1)) if m else None


def _layout_position(parts: list[str]) -> int | None:
    """Index of ``train``/``val`` in a folder path of the form ``.../{train,val}/{ai,nature}/...``."""
    for i in range(len(parts) - 1):
        if parts[i] in SUBSETS and parts[i + 1] in KINDS:
            return i
    return None


def _named_generator(folders: list[str], where: str) -> tuple[str, int] | None:
    """(generator, depth of its outermost folder) named by GenImage folders above ``train/``/``val/``.

    The folder nearest to ``train/`` that is a known GenImage name gives the generator (so a root one
    level too high still works); None when no folder is one. Two different GenImage names on one path
    are an error: the archive is in the wrong folder.
    """
    named = [(k, f, g) for k, f in enumerate(folders) if (g := canonical_generator(f)) is not None]
    if not named:
        return None
    if len({g for _, _, g in named}) > 1:
        raise CatalogError(f"{where}: folders {', '.join(f for _, f, _ in named)} name different generators "
                           f"({', '.join(g for _, _, g in named)}); move the archive into its own generator folder")
    return named[-1][2], named[0][0]


Unit = tuple[str, ...]  # the folders between --root and one train/ or val/ folder


def _generators(units: set[Unit], root: str) -> tuple[dict[Unit, str], list[str]]:
    """The generator of every unit of the tree, and notes on the choices that the tree cannot settle.

    Units naming a GenImage generator or archive get it (:func:`_named_generator`). A unit of custom
    folder names could be ``<generator>/<archive>/`` or ``<root too high>/<generator>/``; one rule for the
    whole tree decides, so two generators are never merged under the folder above them:

    1. where the GenImage names sit at one depth (0 normally, 1 for a root one level too high), the
       custom folder at that depth is the generator;
    2. otherwise (or when that folder holds several train-holding sub-folders), the outermost folder
       that does not branch: GenImage's nested layout has exactly one archive folder per generator, so
       a folder holding several folders with train/val below is above the generators, not one of them.

    A unit settled by rule 2 alone inside a single chain of folders (``hi/GenImage/MyGAN/train``: is
    GenImage the generator, or a folder above it?) is read as ``<generator>/<archive>/`` and noted,
    with the ``--root`` that gives the other reading.
    """
    base = os.path.basename(os.path.abspath(root))
    children: dict[Unit, set[str]] = {}
    for u in units:
        for k in range(len(u)):
            children.setdefault(u[:k], set()).add(u[k])
    out: dict[Unit, str] = {}
    depths: set[int] = set()
    custom = []
    for u in units:
        named = _named_generator(list(u) or [base], os.path.join(root, *u))
        if named is None:
            custom.append(u)
        else:
            out[u] = named[0]
            if u:  # () is --root itself, a generator folder: it says nothing about depth
                depths.add(named[1])
    depth = next(iter(depths)) if len(depths) == 1 else None

    def branches(folder: Unit) -> bool:
        return len(children.get(folder, ())) > 1

    notes = []
    for u in sorted(custom):
        if not u:
            out[u] = base  # --root is one generator's folder
            continue
        if depth is not None and depth < len(u) and not branches(u[:depth + 1]):
            k = depth
        else:
            k = next((k for k in range(len(u)) if not branches(u[:k + 1])), len(u) - 1)
            if k < len(u) - 1 and len(children[u[:k]]) == 1:
                notes.append(f"{'/'.join(u)}/ read as <generator>/<archive>/, source {u[k]}; if {u[k + 1]} is "
                             f"the generator, pass --root {os.path.join(root, *u[:k + 1])}")
        out[u] = u[k]
    return out, notes


def genimage_key(path: str) -> str | None:
    """``<generator>/<subset>/<ai|nature>/<rest>`` for a path in either GenImage layout, whatever its root.

    Lets a split file written for the flat layout (``ADM/train/ai/x.PNG``) find an image listed in the
    nested one (``ADM/imagenet_ai_0508_adm/train/ai/x.PNG``) and vice versa.
    """
    parts = path.replace("\\", "/").split("/")
    i = _layout_position(parts[:-1])
    if i is None or i == 0:
        return None
    folders = [p for p in parts[:i] if p not in ("", ".", "..")]
    if not folders:
        return None
    named = [g for f in folders if (g := canonical_generator(f)) is not None]
    gen = named[-1] if named else folders[-1]
    return "/".join([gen] + parts[i:])


def _unpacked_twice(copies: dict[tuple[str, str], list[list[str]]]) -> tuple[int, str]:
    """(number of extra copies, an example) of files with the same generator, subset, class folder and
    name under two folders (``ADM/train/ai/x.png`` and ``ADM/imagenet_ai_0508_adm/train/ai/x.png``).

    Only groups found in several folders are compared, so a normal tree costs no extra memory.
    """
    twice, example = 0, ""
    for (gen, tail), lists in copies.items():
        if len(lists) > 1:
            seen: set[str] = set()
            for n in (n for names in lists for n in names):
                if n in seen:
                    twice += 1
                    example = example or f"{tail}/{n} of {gen}"
                seen.add(n)
    return twice, example


def read_genimage(root: str | os.PathLike, progress: bool = False) -> ImageList:
    """List every image under ``[<generator>/][<archive>/]{train,val}/{ai,nature}/`` without opening any.

    Rows are ``(path relative to root, source, subset)``: source = canonical generator for ``ai``
    images (unknown folder names are kept as they are, so custom generators in this layout work too),
    ``real`` for ``nature`` images; subset = ``train`` or ``val``. Image files elsewhere (previews,
    stray copies) are skipped and counted in a note; so are generators that are missing.
    """
    root = os.fspath(root)
    unlisted = Skipped()
    tops = top_folders(root, unlisted)
    found: list[tuple[str, list[str], int, list[str]]] = []  # (folder, its parts, train/val index, names)
    skipped: list[str] = []
    n_skipped = 0
    bar = _bar("listing GenImage", progress)
    for top in tops:
        for rel, names in scan_images(os.path.join(root, top), unlisted):
            folder = f"{top}/{rel}" if rel else top
            parts = folder.split("/")
            i = _layout_position(parts)
            if i is None:
                n_skipped += len(names)
                if len(skipped) < 3:
                    skipped.append(f"{folder}/{names[0]}")
                continue
            found.append((folder, parts, i, names))  # i == 0: --root is one generator's folder
            bar.update(len(names))
    bar.close()
    unlisted.print()
    # the generator of a folder depends on the whole tree (see _generators), so it is chosen after listing
    gens, notes = _generators({tuple(parts[:i]) for _, parts, i, _ in found}, root)
    rows: list[tuple[str, str, str]] = []
    generators: set[str] = set()
    copies: dict[tuple[str, str], list[list[str]]] = {}  # (generator, subset/kind/...) -> name lists
    for folder, parts, i, names in found:
        gen = as_label(gens[tuple(parts[:i])])
        source = gen if parts[i + 1] == "ai" else REAL
        if source != REAL:
            generators.add(gen)
        prefix = folder + "/"
        rows.extend((prefix + n, source, parts[i]) for n in names)
        copies.setdefault((gen, "/".join(parts[i:])), []).append(names)
    if not rows:
        raise CatalogError(
            f"{root}: no images under [<generator>/][<archive>/]{{train,val}}/{{ai,nature}}/ "
            f"(expected generator folders such as {', '.join(GENERATORS[:3])}, ...; found: "
            f"{', '.join(tops[:12]) or 'nothing'}{' ...' if len(tops) > 12 else ''})")
    if progress:
        _print_notes(root, n_skipped, skipped, notes, copies, generators)
    return ImageList.from_rows(rows, root, where=root)


def _print_notes(root: str, n_skipped: int, skipped: list[str], notes: list[str],
                 copies: dict[tuple[str, str], list[list[str]]], generators: set[str]) -> None:
    """What a user should know about a listed tree: skipped files, how ambiguous folders were read,
    images listed twice, GenImage generators that are missing."""
    if n_skipped:
        print(f"note: {n_skipped} image files outside {{train,val}}/{{ai,nature}}/ were skipped, e.g. "
              f"{', '.join(skipped)}", file=sys.stderr)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    twice, example = _unpacked_twice(copies)
    if twice:
        print(f"note: {twice} image files are listed twice, from two unpacked copies of one generator (the "
              f"flat and the archive-nested layout), e.g. {example}; both rows are kept, so each such image "
              f"is extracted and sampled twice: delete one copy to avoid that", file=sys.stderr)
    missing = [g for g in GENERATORS if g not in generators]
    if missing and len(missing) < len(GENERATORS):
        print(f"note: no images of GenImage generator(s) {', '.join(missing)} under {root}; splits "
              f"that need them will fail", file=sys.stderr)
