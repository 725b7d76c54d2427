"""The image list: folder and list readers, sampling, path matching, and --max-per-source end to end."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import write_png
from trees import genimage_tree

from attrib.cli import main
from attrib.data import open_dataset
from attrib.data.catalog import CatalogError, ImageList, read_folder, read_list, sample_per_source, subset_role
from attrib.data.genimage import genimage_key, read_genimage
from attrib.data.pathmatch import AMBIGUOUS, MISSING, PathMatcher
from attrib.store import FeatureSet


def _touch(root: Path, *rels: str) -> None:
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).touch()


# ------------------------------------------------------------------------------------ folder
def test_folder_sources_and_subsets(tmp_path: Path, capsys) -> None:
    _touch(tmp_path, "real/a.jpg", "real/deep/b.JPEG", "ganA/train/x/1.png", "ganA/val/2.png", "ganA/test/3.png",
           "ganB/c.webp", "ganB/.hidden.png", "ganB/readme.txt", ".cache/z.png", "__MACOSX/ganB/._c.webp", "loose.png")
    images = read_folder(tmp_path, progress=True)
    assert list(images) == [("ganA/test/3.png", "ganA", "test"), ("ganA/train/x/1.png", "ganA", "train"),
                            ("ganA/val/2.png", "ganA", "val"), ("ganB/c.webp", "ganB", "all"),
                            ("real/a.jpg", "real", "all"), ("real/deep/b.JPEG", "real", "all")]
    assert "1 image files directly in" in capsys.readouterr().err
    name = open_dataset("folder", str(tmp_path))[1]
    assert name == tmp_path.name


def test_folder_subset_variants_are_recognised(tmp_path: Path) -> None:
    _touch(tmp_path, "ganA/Train/1.png", "ganA/Validation/2.png", "ganA/testing/3.png", "ganA/other/4.png")
    assert list(read_folder(tmp_path)) == [("ganA/Train/1.png", "ganA", "Train"),
                                           ("ganA/Validation/2.png", "ganA", "Validation"),
                                           ("ganA/other/4.png", "ganA", "all"),
                                           ("ganA/testing/3.png", "ganA", "testing")]
    assert [subset_role(s) for s in ("Train", " VAL ", "valid", "testing", "all", "trains")] == \
        ["train", "val", "val", "test", None, None]


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="is not a folder"):
        read_folder(tmp_path / "nope")
    with pytest.raises(CatalogError, match="no source folders found"):
        read_folder(tmp_path)
    (tmp_path / "ganA").mkdir()
    with pytest.raises(CatalogError, match="no image files found under ganA"):
        read_folder(tmp_path)
    with pytest.raises(CatalogError, match="needs --root"):
        open_dataset("folder")


# -------------------------------------------------------------------------------------- list
def test_list_file_forms(tmp_path: Path) -> None:
    lst = tmp_path / "lists" / "mine.tsv"
    lst.parent.mkdir()
    lst.write_text("# my benchmark\n"
                   "imgs/a.png\tganA\ttrain\r\n"
                   f"{tmp_path / 'lists' / 'imgs' / 'b.png'}\treal\n"
                   "\n"
                   "./imgs/sub/../c.png\tganB\tval\n")
    _touch(lst.parent, "imgs/a.png", "imgs/b.png", "imgs/c.png")
    images = read_list(lst)
    assert images.root == str(lst.parent)
    assert list(images) == [("imgs/a.png", "ganA", "train"), ("imgs/b.png", "real", "all"),
                            ("imgs/c.png", "ganB", "val")]
    assert read_list(lst, root=tmp_path).paths == ["imgs/a.png", "imgs/c.png", "lists/imgs/b.png"]  # abs -> --root
    images2, name = open_dataset("list", str(tmp_path), str(lst))
    assert name == "mine" and images2.root == str(tmp_path.resolve())


def test_images_tsv_of_a_feature_set_is_a_valid_list(tmp_path: Path) -> None:
    images = ImageList.from_rows([("g/1.png", "g", "train"), ("r/2.jpg", "real", "val")], tmp_path)
    images.write_tsv(tmp_path / "images.tsv")
    _touch(tmp_path, "g/1.png", "x.png")
    assert read_list(tmp_path / "images.tsv").sha256() == images.sha256()
    (tmp_path / "h.tsv").write_text("source\tpath\nganA\tx.png\n")  # any column order
    assert list(read_list(tmp_path / "h.tsv")) == [("x.png", "ganA", "all")]


@pytest.mark.parametrize("text, match", [
    ("a.png\tganA\n a.png \tganB\n", r"bad\.tsv:2: duplicate path 'a\.png' \(first on line 1\)"),
    ("a.png\n", r"bad\.tsv:1: expected path<TAB>source\[<TAB>subset\], got 1"),
    ("a.png\tganA\ttrain\textra\n", r"bad\.tsv:1: expected .* got 4"),
    ("ok.png\tganA\na.png\t\n", r"bad\.tsv:2: empty source"),
    ("# only comments\n\n", r"bad\.tsv: no images listed"),
    ("path\tsource\na.png\n", r"bad\.tsv:2: expected 2 tab-separated fields \(path, source\)"),
])
def test_list_file_errors_name_file_and_line(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "bad.tsv").write_text(text)
    with pytest.raises(CatalogError, match=match):
        read_list(tmp_path / "bad.tsv")


def test_list_file_missing(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="does not exist"):
        read_list(tmp_path / "nope.tsv")
    with pytest.raises(CatalogError, match="needs --list"):
        open_dataset("list")


def test_list_file_that_is_not_utf8_names_file_and_line(tmp_path: Path) -> None:
    _touch(tmp_path, "imgs/a.png")
    (tmp_path / "l.tsv").write_bytes("imgs/a.png\tganA\n# café\n".encode("utf-8") + b"imgs/\xe9.png\tganA\n")
    with pytest.raises(CatalogError, match=r"l\.tsv:3: not UTF-8 text \(byte 0xe9 at column 6\); save the file as "
                                           r"UTF-8"):
        read_list(tmp_path / "l.tsv")
    code, out = _features(["--dataset", "list", "--list", str(tmp_path / "l.tsv"), "--cache", str(tmp_path / "c")])
    assert code == 2 and "l.tsv:3: not UTF-8 text" in out and "Traceback" not in out


def test_list_root_must_hold_the_listed_files(tmp_path: Path) -> None:
    """A wrong --root would extract a feature set of failed rows with the right one's identity."""
    _touch(tmp_path, "data/imgs/a.png")
    lst = tmp_path / "l.tsv"
    lst.write_text("# header comment\nimgs/a.png\tganA\nimgs/b.png\treal\n")
    with pytest.raises(CatalogError, match=r"--root '.*nonexistent' is not a folder"):
        read_list(lst, tmp_path / "nonexistent")
    with pytest.raises(CatalogError, match=r"--root '.*l\.tsv' is not a folder"):
        read_list(lst, lst)
    with pytest.raises(CatalogError, match=re.escape(
            f"l.tsv: none of the first 2 listed files exist under {tmp_path} (the list file's folder, the default "
            f"--root); e.g. line 2: {tmp_path / 'imgs' / 'a.png'}. Pass --root DIR")):
        read_list(lst)
    assert read_list(lst, tmp_path / "data").paths == ["imgs/a.png", "imgs/b.png"]  # b.png missing: a failed row
    code, out = _features(["--dataset", "list", "--list", str(lst), "--root", str(tmp_path / "nonexistent"),
                           "--cache", str(tmp_path / "cache")])
    assert code == 2 and "is not a folder" in out and not (tmp_path / "cache").exists()
    code, out = _features(["--dataset", "list", "--list", str(lst), "--root", str(tmp_path),
                           "--cache", str(tmp_path / "cache")])
    assert code == 2 and "none of the first 2 listed files exist under" in out and not (tmp_path / "cache").exists()


def test_demo_root_that_is_not_a_demo_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "mine" / "photos").mkdir(parents=True)
    res = CliRunner().invoke(main, ["features", "--dataset", "demo", "--root", str(tmp_path / "mine"), "--quiet"],
                             catch_exceptions=False)
    assert res.exit_code == 2 and "is not an attrib demo folder; choose another --root" in res.output
    assert (tmp_path / "mine" / "photos").is_dir()  # nothing deleted


def test_cache_find_with_a_bad_view_is_a_clear_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["cache", "find", "--cache", str(tmp_path), "--view", "jpeg"],
                             catch_exceptions=False)
    assert res.exit_code == 2 and "Error: --view 'jpeg'" in res.output


def test_duplicate_rows_are_refused() -> None:
    with pytest.raises(CatalogError, match=r"duplicate path 'a\.png'"):
        ImageList.from_rows([("a.png", "g", "train"), ("a.png", "real", "val")])


# ---------------------------------------------------------------------------------- sampling
def _big_list(n: int = 200) -> ImageList:
    rows = [(f"{s}/{sub}/{i}.png", s, sub) for s in ("real", "ganA", "ganB") for sub in ("train", "val")
            for i in range(n)]
    rows += [("tiny/train/0.png", "tiny", "train")]
    return ImageList.from_rows(rows)


def test_sample_per_source_is_seeded_order_free_and_nested() -> None:
    full = _big_list()
    a = sample_per_source(full, 10, seed=0)
    assert set(a.counts().values()) == {10, 1} and a.counts()[("tiny", "train")] == 1
    shuffled_rows = list(full)
    random.Random(3).shuffle(shuffled_rows)
    assert sample_per_source(ImageList.from_rows(shuffled_rows), 10, seed=0).sha256() == a.sha256()
    assert sample_per_source(full, 10, seed=1).sha256() != a.sha256()
    b = sample_per_source(full, 25, seed=0)
    assert set(a.paths) < set(b.paths)  # growing N only adds images
    assert a.paths == sorted(a.paths)
    with pytest.raises(CatalogError, match="must be positive"):
        sample_per_source(full, 0)


# ----------------------------------------------------------------------------------- matching
def test_path_matcher(tmp_path: Path) -> None:
    images = read_genimage(genimage_tree(tmp_path / "GenImage", layout="mixed"))
    m = PathMatcher(images, key=genimage_key)
    flat_adm = "ADM/train/ai/0_adm_train_0.png"
    nested_bg = "BigGAN/imagenet_ai_0419_biggan/val/nature/n00001_val_11.jpg"
    row = images.index(flat_adm)
    assert m.match(flat_adm) == row
    assert m.match(f"{tmp_path}/GenImage/{flat_adm}") == row  # absolute, under the root
    assert m.match(f"./dataset/GenImage/{flat_adm}") == row  # the paper's relative paths
    assert m.match(f"/elsewhere/GenImage/{flat_adm}".replace("/", "\\")) == row  # another machine's root
    assert m.match("./dataset/GenImage/BigGAN/val/nature/n00001_val_11.jpg") == images.index(nested_bg)  # layout
    assert m.match("ADM/train/ai/nope.png") == MISSING
    # the listing's root above the split files' root: a prefix is learned from a unique match
    high = read_genimage(tmp_path)
    mh = PathMatcher(high)
    assert mh.match(flat_adm) == high.index("GenImage/" + flat_adm)
    assert mh.match("ADM/val/ai/1_adm_val_1.png") == high.index("GenImage/ADM/val/ai/1_adm_val_1.png")
    # a file name alone that several images share is ambiguous, never guessed
    same = ImageList.from_rows([("a/x.png", "a", "all"), ("b/x.png", "b", "all")])
    assert PathMatcher(same).match("x.png") == AMBIGUOUS


# ------------------------------------------------------------------------ --max-per-source e2e
def _features(args: list[str]) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["features", "--model", "attrib-tiny", "--workers", "0", "--quiet", *args])
    return res.exit_code, res.output


def test_max_per_source_is_its_own_feature_set(tmp_path: Path, tiny_checkpoint: Path) -> None:
    root = tmp_path / "bench"
    for src in ("real", "ganA", "ganB"):
        for sub in ("train", "val"):
            for i in range(3):
                write_png(root / src / sub / f"{i}.png", seed=i, size=24)
    cache = tmp_path / "cache"
    common = ["--dataset", "folder", "--root", str(root), "--pretrained", str(tiny_checkpoint), "--cache", str(cache)]
    paths = {}
    for n in (1, 2, None):
        code, out = _features(common + (["--max-per-source", str(n)] if n else []))
        assert code == 0, out
        paths[n] = Path(out.strip().splitlines()[-1])
    fs = {n: FeatureSet.open(p) for n, p in paths.items()}
    assert len(set(paths.values())) == 3  # three image lists, three feature sets
    assert [fs[n].n_images for n in (1, 2, None)] == [6, 12, 18]
    assert len({fs[n].manifest.images_sha256 for n in fs}) == 3
    assert fs[1].manifest.max_per_source == 1 and "max_per_source" not in fs[None].manifest.to_json()
    assert set(fs[1].images.paths) < set(fs[2].images.paths) < set(fs[None].images.paths)
    # the same N again reuses its feature set; forcing another N into it is refused, never mixed
    code, out = _features(common + ["--max-per-source", "2"])
    assert code == 0 and Path(out.strip().splitlines()[-1]) == paths[2]
    code, out = _features(common + ["--max-per-source", "1", "--out", str(paths[2])])
    assert code == 2 and "images_sha256" in out and "n_images" in out
    assert FeatureSet.open(paths[2]).n_images == 12
    found = CliRunner().invoke(main, ["cache", "find", "--cache", str(cache), "--dataset", "bench",
                                      "--max-per-source", "1"])
    assert found.output.strip() == str(paths[1])
    info = json.loads((paths[1] / "manifest.json").read_text())
    assert info["sample_seed"] == 0 and info["dataset_kind"] == "folder"


def test_list_dataset_end_to_end(tmp_path: Path, tiny_checkpoint: Path) -> None:
    write_png(tmp_path / "imgs" / "a.png", seed=1, size=24)
    write_png(tmp_path / "imgs" / "b.png", seed=2, size=24)
    (tmp_path / "list.tsv").write_text("imgs/a.png\tganA\ttrain\nimgs/b.png\treal\tval\n")
    code, out = _features(["--dataset", "list", "--list", str(tmp_path / "list.tsv"), "--pretrained",
                           str(tiny_checkpoint), "--cache", str(tmp_path / "cache")])
    assert code == 0, out
    fs = FeatureSet.open(out.strip().splitlines()[-1])
    assert fs.manifest.dataset == "list"
    assert list(fs.images) == [("imgs/a.png", "ganA", "train"), ("imgs/b.png", "real", "val")]
    (tmp_path / "bad.tsv").write_text("imgs/a.png\tganA\nimgs/a.png\treal\n")
    code, out = _features(["--dataset", "list", "--list", str(tmp_path / "bad.tsv"), "--cache", str(tmp_path / "c")])
    assert code == 2 and "bad.tsv:2: duplicate path 'imgs/a.png' (first on line 1)" in out
