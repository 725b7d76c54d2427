"""`attrib robustness`: conditions, the views a study needs (found or extracted), the studies, the report.

The end-to-end runs use real demo images, the real tiny model (random weights) and real feature sets.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from attrib import choices
from attrib.cli import main
from attrib.extract.views import PAPER_INTENSITIES, View
from attrib.probe.robustness import (Condition, RobustnessError, conditions, parse_intensities,
                                     parse_perturbations)
from attrib.store import FeatureSet, list_feature_sets
from conftest import extract_demo_features


def _run(args: list[str], code: int = 0) -> str:
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == code, res.output
    return res.output


# ------------------------------------------------------------------------------------------ grammar
def test_perturbations_are_the_papers() -> None:
    assert choices.PERTURBATIONS == tuple(PAPER_INTENSITIES)
    assert parse_perturbations("all") == ["resize", "blur", "jpeg", "crop"]
    assert parse_perturbations("jpeg, blur,jpeg") == ["jpeg", "blur"]
    with pytest.raises(RobustnessError, match="--perturb 'jpeg,noise': noise is not a perturbation"):
        parse_perturbations("jpeg,noise")


def test_intensities() -> None:
    assert parse_intensities("all") == parse_intensities("1-5") == [1, 2, 3, 4, 5]
    assert parse_intensities("5,1,3") == [1, 3, 5] and parse_intensities("2") == [2]
    for bad in ("0", "6", "3-1", "x", "1-9", ""):
        with pytest.raises(RobustnessError, match="levels 1 to 5"):
            parse_intensities(bad)


def test_conditions_are_the_papers_views() -> None:
    conds = conditions(["resize", "crop"], [2, 3])
    assert conds[0] == Condition() and conds[0].clean and conds[0].view == "none" and conds[0].name == "clean"
    assert [(c.name, c.view) for c in conds[1:]] == [
        ("resize-2", "shortside:352"), ("resize-3", "shortside:576"), ("crop-2", "rcrop:0.0875"),
        ("crop-3", "rcrop:0.125")]
    assert Condition("blur", 5).view == "blurk:15" and Condition("jpeg", 1).view == "jpeg:10"
    for c in conditions(list(PAPER_INTENSITIES), [1, 2, 3, 4, 5]):
        assert View.parse(c.view).spec == c.view  # every condition is a valid view


# ------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def clean(demo_root: Path, tmp_path_factory) -> FeatureSet:
    return extract_demo_features(demo_root, tmp_path_factory.mktemp("robust-cache"))


def _robustness(clean: FeatureSet, out: Path, *extra: str, code: int = 0) -> str:
    return _run(["robustness", "--features", str(clean.path), "--cache", str(clean.path.parent), "--splits", "1",
                 "--layers", "3", "--grid", "C=0.1,10", "--workers", "0", "--quiet", "--out", str(out), *extra],
                code=code)


def _csv(out: Path) -> list[dict[str, str]]:
    with open(out / "robustness.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_every_condition_has_a_row_and_a_rerun_extracts_nothing(clean: FeatureSet, tmp_path: Path) -> None:
    out = tmp_path / "rb"
    log = _robustness(clean, out, "--perturb", "jpeg,blur", "--intensities", "1,5")
    assert "feature sets: 4 extracted" in log
    rows = _csv(out)
    assert [(r["train"], r["perturbation"], r["intensity"], r["view"]) for r in rows] == [
        ("clean", "none", "0", "none"), ("clean", "jpeg", "1", "jpeg:10"), ("clean", "jpeg", "5", "jpeg:75"),
        ("clean", "blur", "1", "blurk:3"), ("clean", "blur", "5", "blurk:15")]
    for r in rows:
        assert r["method"] == "3 / logreg+msp / shots all / clean" and r["runs"] == "1"
        assert 0 <= float(r["accuracy"]) <= 100 and 0 <= float(r["auroc"]) <= 100
        assert r["label"].startswith("random-init") and r["train_features"] == clean.id
    views = {r["view"]: r["eval_features"] for r in rows}
    assert views["none"] == clean.id and len(set(views.values())) == 5
    for view, fs_id in views.items():
        fs = FeatureSet.open(clean.path.parent / fs_id)
        assert fs.manifest.view == view
        if view != "none":  # the validation and test rows of split 1 only
            assert fs.manifest.rows_for["splits"].keys() == {"1"} and fs.n_images == 72 < clean.n_images
    assert (out / "robustness.png").stat().st_size > 10_000 and "| jpeg | 1 | jpeg:10 | clean |" in \
        (out / "robustness.md").read_text()
    index = json.loads((out / "robustness.json").read_text())["runs"]
    assert [e["condition"] for e in index] == ["clean", "jpeg-1", "jpeg-5", "blur-1", "blur-5"]

    n_sets = len(list_feature_sets(clean.path.parent))
    stamps = {p: p.stat().st_mtime_ns for p in clean.path.parent.glob("*/shard-*.h5")}
    again = _robustness(clean, out, "--perturb", "jpeg,blur", "--intensities", "1,5")
    assert "feature sets: 0 extracted (0 images), 5 already there" in again
    assert "results: 0 new lines, 5 already done" in again
    assert len(list_feature_sets(clean.path.parent)) == n_sets
    assert {p: p.stat().st_mtime_ns for p in clean.path.parent.glob("*/shard-*.h5")} == stamps
    assert _csv(out) == rows

    # --no-extract: the cached views serve a new study; a missing one is refused, by name
    sub = tmp_path / "rb-sub"
    assert "feature sets: 0 extracted" in _robustness(clean, sub, "--perturb", "blur", "--intensities", "5",
                                                       "--no-extract")
    refused = _robustness(clean, tmp_path / "rb-missing", "--perturb", "jpeg", "--intensities", "1-3",
                          "--no-extract", code=2)
    assert "--no-extract: 2 of 3 feature sets are not in" in refused
    assert "view jpeg:26 of 72 images" in refused and "view jpeg:42 of 72 images" in refused


@pytest.mark.slow
def test_training_view_adds_the_augmented_rows(clean: FeatureSet, tmp_path: Path) -> None:
    out = tmp_path / "rb-aug"
    _robustness(clean, out, "--perturb", "crop", "--intensities", "1", "--train-view", "paper-train-aug")
    rows = _csv(out)
    assert [(r["perturbation"], r["intensity"], r["train"]) for r in rows] == [
        ("none", "0", "clean"), ("none", "0", "paper-train-aug"), ("crop", "1", "clean"),
        ("crop", "1", "paper-train-aug")]
    aug = FeatureSet.open(clean.path.parent / rows[1]["train_features"])
    assert aug.manifest.view == "paper-train-aug" and aug.images.paths == clean.images.paths  # the whole list
    assert rows[1]["eval_features"] == clean.id and rows[2]["eval_features"] == rows[3]["eval_features"]
    assert "| crop | 1 | rcrop:0.05 | paper-train-aug |" in (out / "robustness.md").read_text()
