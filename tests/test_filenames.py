"""Odd file names: names that are not UTF-8 are listed and extracted, names a TSV cannot hold and symlinks
that would list images twice are skipped with a note, and ordinary lists keep their hash."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_png
from PIL import Image

from attrib.cli import main
from attrib.data.catalog import ImageList, read_folder, read_list, sample_per_source
from attrib.data.filenames import escape_path, path_bytes, unescape_path
from attrib.data.genimage import read_genimage
from attrib.store import FeatureSet

BAD = os.fsdecode(b"bad\xff\xfe.png")  # what os.listdir returns for these bytes: 'bad\udcff\udcfe.png'


def _write_bad_name(folder: Path, seed: int = 7) -> Path:
    """An image whose name is the bytes b'bad\\xff\\xfe.png' (skips where the file system refuses them)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return write_png(folder / BAD, seed=seed, size=24)
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system does not store file names that are not UTF-8")


# ----------------------------------------------------------------------------- the text form
@pytest.mark.parametrize("name", [
    "plain/a.png", "ünïcödé/照片.jpg", BAD, "dir\\with\\backslashes.png", "lit\\x80eral.png", "two\\\\.png",
    "a\\" + os.fsdecode(b"\xff") + ".png", "\\", os.fsdecode(b"\x80\xff"),
])
def test_escaped_paths_round_trip_and_are_utf8(name: str) -> None:
    text = escape_path(name)
    text.encode("utf-8")  # storable in a UTF-8 file
    assert unescape_path(text) == name
    assert path_bytes(name) == os.fsencode(name)  # the bytes on disk


def test_ordinary_names_are_written_as_they_are() -> None:
    for name in ("a.png", "ünï/照片.jpg", "dir\\name.png", "x\\y\\z.png"):
        assert escape_path(name) == name
    assert escape_path(BAD) == "bad\\xff\\xfe.png"


def test_the_hash_of_an_ordinary_list_is_unchanged() -> None:
    """The feature-set folder name is built from this hash: it must be what it always was (UTF-8 lines)."""
    rows = [("real/ü.png", "real", "train"), ("gan/a b.png", "gan", "val")]
    want = hashlib.sha256("".join(f"{p}\t{s}\t{sub}\n" for p, s, sub in sorted(rows)).encode("utf-8")).hexdigest()
    assert ImageList.from_rows(rows).sha256() == want


def test_images_tsv_holds_escaped_utf8_and_reads_back_the_exact_names(tmp_path: Path) -> None:
    rows = [(f"gen/{BAD}", "gen", "all"), ("gen/lit\\x80.png", "gen", "all"), ("real/ok.png", "real", "all")]
    images = ImageList.from_rows(rows)
    images.write_tsv(tmp_path / "images.tsv")
    text = (tmp_path / "images.tsv").read_bytes().decode("utf-8")  # valid UTF-8
    assert "gen/bad\\xff\\xfe.png\t" in text and "real/ok.png\t" in text
    back = ImageList.read_tsv(tmp_path / "images.tsv")
    assert back.paths == images.paths and back.sha256() == images.sha256()


# --------------------------------------------------------------------------------- listings
def test_folder_listing_keeps_non_utf8_names_and_skips_tab_names_with_a_note(tmp_path: Path, capsys) -> None:
    root = tmp_path / "ds"
    write_png(root / "real" / "a.png")
    _write_bad_name(root / "gen")
    write_png(root / "gen" / "tab\there.png")
    write_png(root / "gen" / "new\nline" / "c.png")
    images = read_folder(root)
    assert images.paths == [f"gen/{BAD}", "real/a.png"]
    err = capsys.readouterr().err
    assert "note: 1 image file(s) skipped: a tab or line break in the name" in err and "tab\\there.png" in err
    assert "note: 1 folder(s) skipped with everything below them" in err and "new\\nline" in err
    assert len(sample_per_source(images, 1)) == 2  # seeded keys hash the name's bytes


def test_genimage_listing_skips_tab_names_with_a_note(tmp_path: Path, capsys) -> None:
    write_png(tmp_path / "ADM" / "train" / "ai" / "a.png")
    write_png(tmp_path / "ADM" / "train" / "ai" / "b\tc.png")
    write_png(tmp_path / "ADM" / "val" / "nature" / "n.png")
    assert read_genimage(tmp_path).paths == ["ADM/train/ai/a.png", "ADM/val/nature/n.png"]
    assert "1 image file(s) skipped" in capsys.readouterr().err


def test_symlink_loops_and_links_into_the_tree_are_not_followed_and_are_noted(tmp_path: Path, capsys) -> None:
    root = tmp_path / "ds"
    write_png(root / "real" / "a.png")
    write_png(root / "gen" / "sub" / "s.png")
    outside = write_png(tmp_path / "elsewhere" / "o.png").parent
    os.symlink("..", root / "gen" / "sub" / "loop")  # gen/sub/loop -> gen: a loop
    os.symlink("sub", root / "gen" / "alias")  # gen/alias -> gen/sub: listed already
    os.symlink(outside, root / "gen" / "more")  # outside the tree: followed
    os.symlink(outside, root / "gen" / "more2")  # the same folder again: listed once
    images = read_folder(root)
    assert images.paths == ["gen/more/o.png", "gen/sub/s.png", "real/a.png"]
    err = capsys.readouterr().err
    assert "note: 1 symlink loop(s) not followed" in err and "gen/sub/loop ->" in err
    assert "note: 1 symlink(s) not followed: they lead to a folder inside the listed tree" in err
    assert "note: 1 symlink(s) not followed: they lead to a folder that is listed already" in err


# ------------------------------------------------------------------------------- end to end
def test_features_extracts_a_non_utf8_name_and_list_round_trips(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """`attrib features` crashed with UnicodeEncodeError while hashing the image list."""
    root = tmp_path / "ds"
    write_png(root / "real" / "a.png", seed=1, size=24)
    bad = _write_bad_name(root / "gen")
    write_png(root / "gen" / "tab\tname.png", seed=2, size=24)
    (root / "gen" / os.fsdecode(b"broken\xff.png")).write_bytes(b"not an image")
    res = CliRunner().invoke(main, ["features", "--dataset", "folder", "--root", str(root), "--model", "attrib-tiny",
                                    "--pretrained", str(tiny_checkpoint), "--cache", str(tmp_path / "cache"),
                                    "--workers", "0", "--max-per-source", "5", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "tab\\tname.png" in res.output and "done: 3 images (1 failed)" in res.output
    fs = FeatureSet.open(res.output.strip().splitlines()[-1])
    assert fs.images.paths == [f"gen/{BAD}", os.fsdecode(b"gen/broken\xff.png"), "real/a.png"]
    ok, errors = fs.status()
    assert ok.tolist() == [True, False, True], errors
    verify = CliRunner().invoke(main, ["cache", "verify", str(fs.path)])  # stdout is strict UTF-8 here
    assert verify.exit_code == 0 and "row 1: gen/broken\\xff.png: not an image" in verify.output
    # the image's features are those of its pixels: equal to a copy of it under a plain name
    assert np.abs(fs.block(3)[0] - fs.block(3)[2]).sum() > 0
    plain = tmp_path / "plain"
    (plain / "gen").mkdir(parents=True)
    Image.open(bad).save(plain / "gen" / "copy.png")
    write_png(plain / "real" / "a.png", seed=1, size=24)
    res2 = CliRunner().invoke(main, ["features", "--dataset", "folder", "--root", str(plain), "--model",
                                     "attrib-tiny", "--pretrained", str(tiny_checkpoint), "--cache",
                                     str(tmp_path / "cache2"), "--workers", "0", "--quiet"])
    assert res2.exit_code == 0, res2.output
    np.testing.assert_array_equal(FeatureSet.open(res2.output.strip().splitlines()[-1]).block(3), fs.block(3)[[0, 2]])
    # the feature set's images.tsv is a list that gives back the same names (and the same image list)
    again = read_list(fs.path / "images.tsv", root)
    assert again.paths == fs.images.paths and again.sha256() == fs.images.sha256()


def test_an_images_tsv_written_before_escapes_reads_as_written(tmp_path: Path) -> None:
    """Before escapes, a name holding a literal '\\x80' or '\\\\' was written as it is: the manifest's hash
    tells that it must be read as it is, not unescaped."""
    rows = [("gen/lit\\x80.png", "gen", "all"), ("gen/two\\\\slashes.png", "gen", "all")]
    old = ImageList.from_rows(rows)
    text = "row\tpath\tsource\tsubset\n" + "".join(f"{i}\t{p}\t{s}\t{sub}\n" for i, (p, s, sub) in enumerate(old))
    (tmp_path / "images.tsv").write_text(text, encoding="utf-8")
    assert ImageList.read_tsv(tmp_path / "images.tsv").paths != old.paths  # alone, the text is ambiguous
    assert ImageList.read_tsv(tmp_path / "images.tsv", sha256=old.sha256()).paths == old.paths
    new = ImageList.from_rows([(f"gen/{BAD}", "gen", "all"), *rows])
    new.write_tsv(tmp_path / "new.tsv")  # written now: unescaped, whatever the hash says
    assert ImageList.read_tsv(tmp_path / "new.tsv", sha256=new.sha256()).paths == new.paths


def test_a_dataset_grown_by_a_non_utf8_name_reads_it_back(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """The grown set's index holds paths as images.tsv does: a name that is not UTF-8 survives growth."""
    root = tmp_path / "ds"
    write_png(root / "real" / "a.png", seed=1, size=24)
    write_png(root / "gen" / "b.png", seed=2, size=24)
    args = ["features", "--dataset", "folder", "--root", str(root), "--model", "attrib-tiny", "--pretrained",
            str(tiny_checkpoint), "--cache", str(tmp_path / "cache"), "--workers", "0", "--quiet"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    _write_bad_name(root / "gen")  # arrives later
    grown = CliRunner().invoke(main, args)
    assert grown.exit_code == 0, grown.output
    assert "done: 1 images" in grown.output
    fs = FeatureSet.open(grown.output.strip().splitlines()[-1])
    assert fs.images.paths == ["gen/b.png", f"gen/{BAD}", "real/a.png"] and fs.status()[0].all()
    assert fs.verify().ok
    np.testing.assert_array_equal(fs.block(3, fs.rows([f"gen/{BAD}"])).shape, (1, fs.width))
