"""Views: parsed strictly, applied deterministically per image, each one its own feature set."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from attrib.cli import main
from attrib.extract.views import VIEWS, View, ViewError
from attrib.store import FeatureSet

IMG = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8))


def _arr(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img).astype(int)


def test_parse_canonical_specs_and_errors() -> None:
    assert View.parse(None).spec == View.parse("none").spec == View.parse(" ").spec == "none"
    assert not View.parse("none") and View.parse("jpeg:75")
    assert View.parse("JPEG:75.0").spec == "jpeg:75"
    assert View.parse("resize:0.5 + jpeg:90").spec == "resize:0.5+jpeg:90"
    assert View.parse("resize:0.5+jpeg:90") == View.parse("resize:.50+jpeg:90")
    with pytest.raises(ViewError, match="'sharpen:2' is not a view. Valid: none, or jpeg:<JPEG quality 1..100>"):
        View.parse("sharpen:2")
    with pytest.raises(ViewError, match="'jpeg' is not a view"):
        View.parse("jpeg")
    with pytest.raises(ViewError, match="'abc' is not a number"):
        View.parse("blur:abc")
    with pytest.raises(ViewError, match="jpeg needs JPEG quality 1..100, got 101"):
        View.parse("jpeg:101")
    with pytest.raises(ViewError, match="resize needs scale factor"):
        View.parse("resize:0")
    assert set(VIEWS) == {"jpeg", "blur", "noise", "brightness", "contrast", "saturation", "rotate", "resize"}


@pytest.mark.parametrize("spec", ["noise:inf", "blur:inf", "blur:nan", "jpeg:inf", "rotate:-inf", "brightness:NaN",
                                  "resize:0.5+contrast:infinity"])
def test_non_finite_values_are_refused(spec: str) -> None:
    """float() reads inf and nan; noise:inf made garbage rows recorded as ok, blur:inf failed every image."""
    with pytest.raises(ViewError, match=rf"--view '{re.escape(spec)}': \w+ needs a finite number \(.+\), got"):
        View.parse(spec)


def test_canonical_specs_are_exact_and_parse_back() -> None:
    """The spec names the feature set and seeds random views: two different values must never share it, and
    values that {v:g} wrote exactly keep the names (hence the feature sets) they always had."""
    assert View.parse("blur:1.0000001").spec == "blur:1.0000001" != View.parse("blur:1").spec == "blur:1"
    assert not np.array_equal(_arr(View.parse("noise:8.0000001")(IMG, "a.png")),
                              _arr(View.parse("noise:8")(IMG, "a.png")))  # seeded by its own spec
    for spec, name in [("jpeg:75", "jpeg:75"), ("blur:1.0", "blur:1"), ("resize:0.5", "resize:0.5"),
                       ("noise:1e-5", "noise:1e-05"), ("brightness:1234567", "brightness:1234567"),
                       ("contrast:0.1", "contrast:0.1"), ("rotate:-0", "rotate:0"),
                       ("brightness:1e6", "brightness:1e06"),  # no '+': it joins views
                       ("contrast:0.30000000000000004", "contrast:0.30000000000000004")]:
        view = View.parse(spec)
        assert view.spec == name and View.parse(name) == view, spec  # saved specs parse back (predict does)


def test_each_view_does_what_it_says() -> None:
    src = _arr(IMG)
    out = {spec: _arr(View.parse(spec)(IMG, "a.png")) for spec in (
        "jpeg:75", "blur:2", "noise:10", "brightness:1.5", "contrast:0.5", "saturation:0", "rotate:90",
        "resize:0.5", "brightness:1")}
    jpeg = io.BytesIO()
    IMG.save(jpeg, format="JPEG", quality=75)
    np.testing.assert_array_equal(out["jpeg:75"], _arr(Image.open(jpeg).convert("RGB")))
    assert np.abs(np.diff(out["blur:2"], axis=1)).mean() < np.abs(np.diff(src, axis=1)).mean() / 3
    noise = out["noise:10"] - src
    assert 6 < noise[(src > 40) & (src < 215)].std() < 14  # std 10 levels where nothing clips
    assert out["brightness:1.5"].mean() > src.mean() * 1.2
    assert out["contrast:0.5"].std() < src.std() * 0.6
    sat = out["saturation:0"]
    assert (sat.max(axis=2) - sat.min(axis=2)).max() <= 1  # grey
    assert out["rotate:90"].shape == src.shape and not np.array_equal(out["rotate:90"], src)
    square = IMG.crop((0, 0, 32, 32))
    np.testing.assert_array_equal(_arr(View.parse("rotate:90")(square, "k")), np.rot90(_arr(square)))  # CCW
    assert out["resize:0.5"].shape == (16, 24, 3)
    np.testing.assert_array_equal(out["brightness:1"], src)


def test_random_views_are_seeded_per_image_path() -> None:
    v = View.parse("noise:5")
    a1, a2, b = (_arr(v(IMG, k)) for k in ("gen/a.png", "gen/a.png", "gen/b.png"))
    np.testing.assert_array_equal(a1, a2)
    assert not np.array_equal(a1, b)
    assert not np.array_equal(_arr(View.parse("noise:6")(IMG, "gen/a.png")), a1)


def test_views_left_to_right_and_resize_guard() -> None:
    both = View.parse("resize:0.5+jpeg:50")(IMG, "k")
    manual = View.parse("jpeg:50")(View.parse("resize:0.5")(IMG, "k"), "k")
    np.testing.assert_array_equal(_arr(both), _arr(manual))
    big = Image.new("RGB", (4000, 4000))
    with pytest.raises(ValueError, match="resize:8 of a 4000x4000 image would exceed"):
        View.parse("resize:8")(big, "k")


def _features(root: Path, cache: Path, view: str) -> FeatureSet:
    res = CliRunner().invoke(main, ["features", "--dataset", "folder", "--root", str(root), "--model",
                                    "attrib-tiny", "--pretrained", "random-init", "--cache", str(cache),
                                    "--view", view, "--workers", "0", "--quiet"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return FeatureSet.open(res.output.strip().splitlines()[-1])


def test_each_view_is_its_own_feature_set_and_reruns_are_identical(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for i in range(6):
        (root / f"src{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
            root / f"src{i % 2}" / f"{i}.png")
    plain = _features(root, tmp_path / "c1", "none")
    noisy1 = _features(root, tmp_path / "c1", "noise:8+jpeg:80")
    noisy2 = _features(root, tmp_path / "c2", "noise:8+jpeg:80")  # a fresh rerun elsewhere
    assert plain.path != noisy1.path and "__noise_8+jpeg_80-" in noisy1.id
    assert noisy1.manifest.view == "noise:8+jpeg:80" and plain.manifest.view == "none"
    assert noisy1.id == noisy2.id
    for layer in range(noisy1.n_blocks):
        np.testing.assert_array_equal(noisy1.block(layer), noisy2.block(layer))
    np.testing.assert_array_equal(noisy1.embed(), noisy2.embed())
    assert not np.allclose(plain.block(3), noisy1.block(3))
    assert sorted(p.name for p in (tmp_path / "c1").iterdir()) == sorted([plain.id, noisy1.id])
