"""`attrib features --rows-for SPLITS --rows-from CLEAN_FS`: a view of a study's evaluation rows only.

Real demo images, the real tiny model (random weights), real HDF5 feature sets; the expected rows are
counted from the split source itself (the rows `attrib probe` reads), not from the code under test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from attrib.cli import main
from attrib.data.sampling import SampledSplits
from attrib.data.splits import builtin_splits, select_splits
from attrib.extract.rows_for import EVAL_PARTS, study_rows
from attrib.store import FeatureSet
from conftest import extract_demo_features


def _run(args: list[str], code: int = 0) -> str:
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == code, res.output
    return res.output


@pytest.fixture(scope="module")
def clean(demo_root: Path, tmp_path_factory) -> FeatureSet:
    return extract_demo_features(demo_root, tmp_path_factory.mktemp("rows-cache"))


def _source(fs: FeatureSet, splits: str) -> SampledSplits:
    return SampledSplits(fs.images, fs.status()[0], select_splits(builtin_splits("demo"), splits))


def _rows_for(clean: FeatureSet, *extra: str) -> FeatureSet:
    out = _run(["features", "--rows-from", str(clean.path), "--cache", str(clean.path.parent), "--workers", "0",
                "--quiet", *extra])
    return FeatureSet.open(out.strip().splitlines()[-1])


def test_rows_for_extracts_exactly_the_validation_and_test_rows(clean: FeatureSet) -> None:
    fs = _rows_for(clean, "--rows-for", "1", "--view", "jpeg:10")
    rows = _source(clean, "1").rows("1", 0)
    sizes = rows.sizes()
    # the demo (24 images per generator, 6 of them in val/): 8 classes x 6 test images, and 3 validation
    # images (20% of the 18 in train/) for each of the 4 known generators, real and the 3 unknown ones
    assert sizes["test"] + sizes["test_unknown"] == 8 * 6 and sizes["val"] + sizes["val_unknown"] == 8 * 3
    want = {clean.images.paths[r] for part in EVAL_PARTS for r in getattr(rows, part)}
    assert fs.n_images == len(want) == 72 < clean.n_images
    assert set(fs.images.paths) == want and not want & {clean.images.paths[r] for r in rows.train}
    assert fs.complete and fs.manifest.view == "jpeg:10" and fs.manifest.dataset == clean.manifest.dataset
    rec = fs.manifest.rows_for
    assert rec["features"] == clean.id and rec["seeds"] == 1 and list(rec["splits"]) == ["1"] and rec["n_rows"] == 72
    assert fs.label == clean.label  # random weights stay labelled


def test_more_seeds_and_splits_only_add_rows(clean: FeatureSet) -> None:
    src = _source(clean, "all")
    want = study_rows([src], 2)
    manual = set()
    for name in ("1", "2", "3"):
        for seed in (0, 1):
            r = src.rows(name, seed)
            manual |= {int(x) for part in EVAL_PARTS for x in getattr(r, part)}
    assert sorted(manual) == want.tolist()
    fs = _rows_for(clean, "--rows-for", "all", "--seeds", "2")
    assert fs.images.paths == [clean.images.paths[r] for r in want]


def test_features_of_a_subset_equal_the_clean_ones(clean: FeatureSet) -> None:
    """The view none of the evaluation rows is the clean features of those images: same backbone, same
    preprocessing, same pixels, whatever else is in the batch."""
    fs = _rows_for(clean, "--rows-for", "2")
    rows = clean.rows(fs.images.paths)
    for block in range(clean.n_blocks):
        np.testing.assert_allclose(fs.block(block), clean.block(block, rows), rtol=2e-3, atol=2e-3)


def test_rerun_extracts_nothing_and_cache_find_finds_it(clean: FeatureSet) -> None:
    fs = _rows_for(clean, "--rows-for", "3", "--view", "blurk:5")
    stamp = fs.shard_path(0).stat().st_mtime_ns
    again = _run(["features", "--rows-from", str(clean.path), "--rows-for", "3", "--view", "blurk:5", "--cache",
                  str(clean.path.parent), "--workers", "0", "--quiet"])
    assert "already in the cache, nothing extracted" in again and again.strip().splitlines()[-1] == str(fs.path)
    assert fs.shard_path(0).stat().st_mtime_ns == stamp
    cache = str(clean.path.parent)
    found = _run(["cache", "find", "--cache", cache, "--rows-from", str(clean.path), "--rows-for", "3", "--view",
                  "blurk:5"])
    assert found.strip() == str(fs.path)
    # whole-set lookups never return a subset of the rows
    assert "no complete feature set" in _run(["cache", "find", "--cache", cache, "--view", "blurk:5"], code=1)
    assert _run(["cache", "find", "--cache", cache, "--view", "none"]).strip() == str(clean.path)


@pytest.mark.parametrize("args, message", [
    (["--rows-for", "1"], "--rows-for SPLITS and --rows-from FEATURE_SET go together"),
    (["--seeds", "2"], "--seeds only choose the rows of --rows-for"),
])
def test_rows_options_need_each_other(args: list[str], message: str, tmp_path: Path) -> None:
    out = _run(["features", "--dataset", "demo", "--root", str(tmp_path), "--cache", str(tmp_path), *args], code=2)
    assert message in out


def test_rows_from_decides_the_image_list_and_backbone(clean: FeatureSet) -> None:
    out = _run(["features", "--rows-from", str(clean.path), "--rows-for", "1", "--model", "attrib-tiny",
                "--max-per-source", "3", "--cache", str(clean.path.parent)], code=2)
    assert "--model, --max-per-source: with --rows-from the image list and the backbone are the clean" in out


def test_views_of_the_same_rows_draw_them_once(clean: FeatureSet, monkeypatch) -> None:
    """A robustness study asks for a dozen views of the same evaluation rows: one draw (and one image
    list, hashed once) serves them all, and each target is what the one-view call gives."""
    from attrib.extract import rows_for
    from attrib.extract.views import View

    draws = []
    real = rows_for.study_rows
    monkeypatch.setattr(rows_for, "study_rows", lambda *a, **k: draws.append(1) or real(*a, **k))
    src = _source(clean, "1")
    views = [View.parse(v) for v in ("jpeg:10", "jpeg:30", "blur:1")]
    many = rows_for.eval_rows_targets(clean, [src], 2, views)
    assert len(draws) == 1 and len({id(t.images) for t in many}) == 1
    for view, target in zip(views, many):
        one = rows_for.eval_rows_target(clean, [src], 2, view)
        assert (target.view, target.extra, target.preprocess) == (one.view, one.extra, one.preprocess)
        assert target.images.sha256() == one.images.sha256()
    assert len(draws) == 1 + len(views)
