"""Options that do not apply are errors naming the option and what it needs, never silently ignored; a
mistyped demo --root is refused instead of building a second demo."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import write_png
from synthetic_features import make_feature_set

import attrib.data.demo as demo
from attrib.cli import main
from attrib.data import DEFAULT_DEMO_ROOT, CatalogError, open_dataset


def _cli(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


@pytest.fixture(scope="module")
def fs(tmp_path_factory):
    return make_feature_set(tmp_path_factory.mktemp("synthetic"), n_train=8, n_val=4)


def test_list_with_a_folder_dataset_is_refused(tmp_path: Path) -> None:
    write_png(tmp_path / "ds" / "real" / "a.png")
    (tmp_path / "l.tsv").write_text("real/a.png\treal\n")
    res = _cli(["features", "--dataset", "folder", "--root", str(tmp_path / "ds"), "--list", str(tmp_path / "l.tsv"),
                "--model", "attrib-tiny", "--cache", str(tmp_path / "cache"), "--quiet"])
    assert res.exit_code == 2
    assert "--list applies only to --dataset list" in res.output and "not to --dataset folder" in res.output
    assert not (tmp_path / "cache").exists()


def test_sample_seed_without_max_per_source_is_refused(tmp_path: Path, demo_root: Path) -> None:
    res = _cli(["features", "--dataset", "demo", "--root", str(demo_root), "--sample-seed", "3",
                "--model", "attrib-tiny", "--cache", str(tmp_path / "cache"), "--quiet"])
    assert res.exit_code == 2 and "--sample-seed applies only with --max-per-source N" in res.output
    res = _cli(["cache", "find", "--cache", str(tmp_path), "--sample-seed", "3"])
    assert res.exit_code == 2 and "--sample-seed applies only with --max-per-source N" in res.output


@pytest.mark.parametrize("extra, option", [(["--allow-missing"], "--allow-missing"),
                                           (["--known-test", "val"], "--known-test")])
def test_split_file_options_without_splits_dir_are_refused(fs, tmp_path: Path, extra, option) -> None:
    res = _cli(["probe", "--features", str(fs.path), "--layers", "2", "--out", str(tmp_path / "r"), "--quiet", *extra])
    assert res.exit_code == 2 and f"{option} applies only with --splits-dir DIR" in res.output
    assert not (tmp_path / "r" / "results.jsonl").exists()


def test_a_demo_root_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    """A typo in --root used to build (and then extract) a whole new demo dataset there, silently."""
    typo = tmp_path / "demo-typo"
    res = _cli(["features", "--dataset", "demo", "--root", str(typo), "--model", "attrib-tiny",
                "--cache", str(tmp_path / "cache"), "--quiet"])
    assert res.exit_code == 2 and "does not exist, so it holds no demo dataset (mistyped?)" in res.output
    assert f"only at {DEFAULT_DEMO_ROOT}" in res.output and "add --build-demo" in res.output
    assert not typo.exists() and not (tmp_path / "cache").exists()
    with pytest.raises(CatalogError, match="--build-demo applies only to --dataset demo"):
        open_dataset("folder", str(tmp_path), build_demo=True)


def test_the_default_root_and_build_demo_still_build(tmp_path: Path, monkeypatch) -> None:
    """`make demo` (no --root) builds data/demo on first use; --build-demo builds one elsewhere."""
    monkeypatch.setattr(demo, "build_demo", functools.partial(demo.build_demo, per_class=4))  # small, but real
    monkeypatch.chdir(tmp_path)
    images, name = open_dataset("demo")
    assert name == "demo" and len(images) == 4 * (len(demo.GENERATORS) + 1)
    assert demo.is_demo(tmp_path / DEFAULT_DEMO_ROOT)
    images, _ = open_dataset("demo", "elsewhere", build_demo=True)
    assert demo.is_demo(tmp_path / "elsewhere") and len(images) == 4 * (len(demo.GENERATORS) + 1)
