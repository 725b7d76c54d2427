"""Tiny on-disk datasets for the data tests: GenImage trees in both layouts, POSE split files."""

from __future__ import annotations

import zlib
from pathlib import Path

from attrib.data.genimage import ARCHIVES, GENERATORS, SPLITS

NESTED = ("BigGAN", "VQDM", "wukong", "stable_diffusion_v_1_5")  # these get the archive level in "mixed"


def genimage_tree(root: Path, n_train: int = 3, n_val: int = 2, layout: str = "flat", images: bool = False,
                  generators: tuple[str, ...] = GENERATORS) -> Path:
    """``root/<gen>[/<archive>]/{train,val}/{ai,nature}/`` with ``n_*`` files per folder.

    layout: ``flat`` (``ADM/train/ai``), ``nested`` (``ADM/imagenet_ai_0508_adm/train/ai``) or ``mixed``
    (:data:`NESTED` generators nested, the others flat). ``images=True`` writes real PNG/JPEG files
    (Pillow), else empty files (enough for listing and matching). Real photos share ImageNet-style
    names across generator folders, as in GenImage.
    """
    from conftest import write_png

    for gi, gen in enumerate(generators):
        nested = layout == "nested" or (layout == "mixed" and gen in NESTED)
        base = root / gen / ARCHIVES[gen] if nested else root / gen
        for subset, n in (("train", n_train), ("val", n_val)):
            for kind in ("ai", "nature"):
                d = base / subset / kind
                d.mkdir(parents=True, exist_ok=True)
                for k in range(n):
                    if kind == "ai":
                        name = f"{k}_{gen.lower()}_{subset}_{k}.png"
                    else:  # the same photo name appears in several generators' nature folders
                        name = f"n0000{k}_{subset}_{k + 10 * (gi % 2)}.jpg"
                    if images:
                        write_png(d / name, seed=zlib.crc32(f"{gen}/{subset}/{kind}/{k}".encode()), size=24)
                    else:
                        (d / name).touch()
    return root


def pose_files(out: Path, rows: dict[str, list[tuple[str, int]]], split: str = "split1") -> Path:
    """Write POSE split files as the paper's release names them; ``rows`` maps a part (train, val,
    val_out_all, test, test_out_all) to (path, label) lines."""
    for part, lines in rows.items():
        folder = part.split("_out")[0]
        f = out / f"{split}_{folder}" / "annotations" / f"{split}_{part}.txt"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("".join(f"{p}\t{y}\n" for p, y in lines))
    return out


def paper_pose_rows(images, split: int = 1, prefix: str = "./dataset/GenImage/",
                    per_class: int | None = None) -> dict[str, list[tuple[str, int]]]:
    """POSE lines for the paper's split ``split`` built from a listing: known = real + 4 generators, label
    index into that list; unknown labels index the unknown list. train/val from train/, test from val/."""
    known, unknown = SPLITS[split]
    classes = ("real",) + known
    out: dict[str, list[tuple[str, int]]] = {p: [] for p in ("train", "val", "val_out_all", "test", "test_out_all")}
    seen: dict[tuple[str, str], int] = {}
    for path, src, subset in images:
        k = seen.get((src, subset), 0)
        if per_class is not None and k >= per_class:
            continue
        seen[(src, subset)] = k + 1
        if src in classes:
            part = ("val" if k % 3 == 2 else "train") if subset == "train" else "test"
            out[part].append((prefix + path, classes.index(src)))
        elif src in unknown:
            part = "val_out_all" if subset == "train" else "test_out_all"
            out[part].append((prefix + path, unknown.index(src)))
    return out
