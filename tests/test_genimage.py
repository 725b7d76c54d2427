"""GenImage listing: both on-disk layouts, canonical names, what is skipped, and what is an error."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from trees import genimage_tree

from attrib.data import open_dataset
from attrib.data.catalog import CatalogError
from attrib.data.genimage import ARCHIVES, GENERATORS, SPLITS, canonical_generator, genimage_key, read_genimage


def _strip_archive(path: str) -> str:
    return "/".join(p for p in path.split("/") if canonical_generator(p) is None or p in GENERATORS)


def test_flat_and_nested_layouts_give_the_same_list(tmp_path: Path) -> None:
    flat = read_genimage(genimage_tree(tmp_path / "flat", layout="flat"))
    nested = read_genimage(genimage_tree(tmp_path / "nested", layout="nested"))
    mixed = read_genimage(genimage_tree(tmp_path / "mixed", layout="mixed"))
    assert len(flat) == len(nested) == len(mixed) == 8 * (3 + 2) * 2
    assert flat.counts() == nested.counts() == mixed.counts()
    assert set(flat.sources) == set(GENERATORS) | {"real"} and set(flat.subsets) == {"train", "val"}
    # the nested list is the flat one with the archive folder inserted: same sources and subsets per file
    assert [(_strip_archive(p), s, sub) for p, s, sub in nested] == list(flat)
    assert any("/imagenet_ai_0419_biggan/train/ai/" in p for p in mixed.paths)
    assert all(p.startswith(("ADM/", "BigGAN/")) or s != "ADM" for p, s, _ in nested)
    for p, s, sub in nested:  # source and subset come from the folders, never from file names
        assert f"/{sub}/" in p and (("/nature/" in p) == (s == "real"))


def test_order_is_deterministic_whatever_the_creation_order(tmp_path: Path) -> None:
    a = genimage_tree(tmp_path / "a", layout="mixed")
    b = tmp_path / "b"
    files = [p.relative_to(a) for p in a.rglob("*") if p.is_file()]
    random.Random(1).shuffle(files)
    for rel in files:
        (b / rel).parent.mkdir(parents=True, exist_ok=True)
        (b / rel).touch()
    la, lb = read_genimage(a), read_genimage(b)
    assert la.paths == sorted(la.paths) and la.sha256() == lb.sha256()


def test_skips_macos_junk_stray_files_and_non_images(tmp_path: Path, capsys) -> None:
    root = genimage_tree(tmp_path / "g", layout="nested")
    (root / "__MACOSX" / "ADM" / "train" / "ai").mkdir(parents=True)
    (root / "__MACOSX" / "ADM" / "train" / "ai" / "._0_adm_0.png").touch()
    (root / "ADM" / "imagenet_ai_0508_adm" / "train" / "ai" / "._hidden.png").touch()
    (root / "ADM" / "imagenet_ai_0508_adm" / "train" / "ai" / "notes.txt").touch()
    (root / "ADM" / "preview.png").touch()  # outside {train,val}/{ai,nature}
    (root / "split1_train" / "annotations").mkdir(parents=True)  # the paper's split folders
    (root / "split1_train" / "annotations" / "split1_train.txt").write_text("x\t0\n")
    images = read_genimage(root, progress=True)
    assert len(images) == 8 * 5 * 2
    assert not any("MACOSX" in p or "/._" in p or p.endswith(".txt") or "preview" in p for p in images.paths)
    err = capsys.readouterr().err
    assert "1 image files outside {train,val}/{ai,nature}/ were skipped" in err and "ADM/preview.png" in err


def test_archive_folders_at_top_and_root_one_level_too_high(tmp_path: Path) -> None:
    # re-packaged copies put the archive folders at the top, without generator folders
    kaggle = tmp_path / "tiny-genimage"
    for gen, archive in ARCHIVES.items():
        for sub in ("train", "val"):
            for kind in ("ai", "nature"):
                d = kaggle / archive / sub / kind
                d.mkdir(parents=True)
                (d / f"{gen}_{kind}.png").touch()
    images = read_genimage(kaggle)
    assert set(images.sources) == set(GENERATORS) | {"real"}
    assert images.counts()[("stable_diffusion_v_1_4", "train")] == 1
    # --root pointing above the GenImage folder still finds the generators
    high = read_genimage(tmp_path)
    assert set(high.sources) == set(GENERATORS) | {"real"} and high.paths[0].startswith("tiny-genimage/")


def test_root_that_is_one_generator_folder(tmp_path: Path) -> None:
    root = genimage_tree(tmp_path / "g", generators=("glide",))
    images = read_genimage(root / "glide")
    assert set(images.sources) == {"glide", "real"} and images.paths[0].startswith("train/")


def test_custom_generators_in_genimage_layout_keep_their_folder_name(tmp_path: Path) -> None:
    for sub in ("train", "val"):
        (tmp_path / "MyGAN" / sub / "ai").mkdir(parents=True)
        (tmp_path / "MyGAN" / sub / "ai" / "a.png").touch()
    assert set(read_genimage(tmp_path).sources) == {"MyGAN"}


def _custom(root: Path, *units: str) -> Path:
    """One ai and one nature file in train/ and val/ under each ``unit`` (folders above train/)."""
    for unit in units:
        for sub in ("train", "val"):
            for kind in ("ai", "nature"):
                (root / unit / sub / kind).mkdir(parents=True)
                (root / unit / sub / kind / "x.png").touch()
    return root


def _sources(images) -> set[str]:
    return set(images.sources) - {"real"}


def test_custom_generators_with_a_root_one_level_too_high_stay_apart(tmp_path: Path, capsys) -> None:
    hi = _custom(tmp_path / "hi", "GenImage/MyGAN", "GenImage/OtherGAN")
    right = read_genimage(hi / "GenImage")
    high = read_genimage(hi, progress=True)
    assert _sources(right) == _sources(high) == {"MyGAN", "OtherGAN"}
    assert [("GenImage/" + p, s, sub) for p, s, sub in right] == list(high)
    assert "note:" not in capsys.readouterr().err
    # with GenImage generators beside them, flat or nested: the generators' depth settles it
    _custom(hi / "GenImage", "ADM", "BigGAN/imagenet_ai_0419_biggan", "Nested/my_archive")
    assert _sources(read_genimage(hi)) == {"ADM", "BigGAN", "MyGAN", "OtherGAN", "Nested"}
    assert _sources(read_genimage(hi / "GenImage")) == {"ADM", "BigGAN", "MyGAN", "OtherGAN", "Nested"}


def test_custom_generator_folders_follow_the_whole_tree(tmp_path: Path, capsys) -> None:
    # <generator>/<archive>/ for custom names: one archive folder per generator, as in GenImage
    nested = _custom(tmp_path / "nested", "MyGAN/my_archive_1", "OtherGAN/other_archive")
    assert _sources(read_genimage(nested)) == {"MyGAN", "OtherGAN"}
    # a folder holding several train-holding folders is above the generators, even beside GenImage's
    mixed = _custom(tmp_path / "mixed", "ADM", "extra/MyGAN", "extra/OtherGAN", "Solo/solo_archive")
    assert _sources(read_genimage(mixed)) == {"ADM", "MyGAN", "OtherGAN", "Solo"}
    assert "note:" not in capsys.readouterr().err
    # one chain of custom folders cannot say which is the generator: read as nested, and noted
    alone = _custom(tmp_path / "alone", "GenImage/MyGAN")
    assert _sources(read_genimage(alone, progress=True)) == {"GenImage"}
    err = capsys.readouterr().err
    assert (f"note: GenImage/MyGAN/ read as <generator>/<archive>/, source GenImage; if MyGAN is the generator, "
            f"pass --root {alone / 'GenImage'}") in err


def test_images_unpacked_in_both_layouts_are_kept_and_noted(tmp_path: Path, capsys) -> None:
    root = genimage_tree(tmp_path / "g", generators=("ADM", "glide"), layout="flat")
    genimage_tree(root, generators=("ADM",), layout="nested")
    images = read_genimage(root, progress=True)
    assert len(images) == 3 * (3 + 2) * 2 and _sources(images) == {"ADM", "glide"}
    assert images.index("ADM/train/ai/0_adm_train_0.png") is not None
    assert images.index("ADM/imagenet_ai_0508_adm/train/ai/0_adm_train_0.png") is not None
    err = capsys.readouterr().err
    assert "note: 10 image files are listed twice, from two unpacked copies of one generator" in err
    assert "delete one copy" in err
    read_genimage(genimage_tree(tmp_path / "once", generators=("ADM", "glide"), layout="mixed"), progress=True)
    assert "listed twice" not in capsys.readouterr().err  # nature photos shared across generators are no copies


def test_conflicting_generator_folders_are_an_error(tmp_path: Path) -> None:
    d = tmp_path / "ADM" / "imagenet_ai_0419_biggan" / "train" / "ai"
    d.mkdir(parents=True)
    (d / "a.png").touch()
    with pytest.raises(CatalogError, match=r"ADM, imagenet_ai_0419_biggan name different generators"):
        read_genimage(tmp_path)


def test_missing_generators_are_noted_and_empty_roots_fail(tmp_path: Path, capsys) -> None:
    root = genimage_tree(tmp_path / "g", generators=("ADM", "BigGAN"))
    read_genimage(root, progress=True)
    assert "no images of GenImage generator(s) glide, Midjourney" in capsys.readouterr().err
    (tmp_path / "empty" / "ADM").mkdir(parents=True)
    with pytest.raises(CatalogError, match=r"no images under .*found: ADM"):
        read_genimage(tmp_path / "empty")
    with pytest.raises(CatalogError, match="is not a folder"):
        read_genimage(tmp_path / "nope")
    with pytest.raises(CatalogError, match="needs --root"):
        open_dataset("genimage")


def test_canonical_names_of_every_release_spelling() -> None:
    for gen, archive in ARCHIVES.items():
        assert canonical_generator(gen) == gen
        assert canonical_generator(gen.upper()) == gen
        assert canonical_generator(archive) == gen
        assert canonical_generator(archive + ".zip") == gen
    assert canonical_generator("sdv1.4") == "stable_diffusion_v_1_4"
    assert canonical_generator("imagenet_DALLE2") is None and canonical_generator("train") is None
    for known, unknown in SPLITS.values():  # the paper's splits use exactly the eight canonical names
        assert sorted(known + unknown) == sorted(GENERATORS) and len(known) == 4


def test_genimage_key_ignores_root_and_layout() -> None:
    a = genimage_key("./dataset/GenImage/ADM/train/ai/0_adm_0.PNG")
    b = genimage_key("ADM/imagenet_ai_0508_adm/train/ai/0_adm_0.PNG")
    c = genimage_key("/data/gi/imagenet_ai_0508_adm/train/ai/0_adm_0.PNG")
    assert a == b == c == "ADM/train/ai/0_adm_0.PNG"
    assert genimage_key("ADM/val/nature/x.JPEG") != genimage_key("BigGAN/val/nature/x.JPEG")
    assert genimage_key("some/other/file.png") is None


def test_open_dataset_genimage_resolves_root(tmp_path: Path) -> None:
    root = genimage_tree(tmp_path / "g", generators=("ADM",))
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        images, name = open_dataset("genimage", "g")
    finally:
        os.chdir(cwd)
    assert name == "genimage" and images.root == str(root.resolve()) and len(images) == 10
