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


# ------------------------------------------------------------------ the paper's perturbations (issue 12)
from attrib.extract.views import (NAMED_VIEWS, PAPER_INTENSITIES, PAPER_VIEWS, TRAIN_CROP_SCALE,  # noqa: E402
                                  paper_view, resized_crop_box, view_rng)

# Odd-sized, portrait and landscape: the sizes where rounding and orientation mistakes show.
PORTRAIT = Image.fromarray(np.random.default_rng(1).integers(0, 256, (301, 187, 3), dtype=np.uint8))
LANDSCAPE = Image.fromarray(np.random.default_rng(2).integers(0, 256, (123, 457, 3), dtype=np.uint8))


def test_paper_intensities_are_the_papers_linspaces() -> None:
    """utils/data/perturbations.py: linspace over each range of configs/base.py, five levels."""
    assert PAPER_INTENSITIES["resize"] == tuple(int(v) for v in np.linspace(128, 1024, 5))
    assert PAPER_INTENSITIES["blur"] == tuple(int(i if i % 2 else i - 1) for i in np.linspace(3, 15, 5))
    assert PAPER_INTENSITIES["jpeg"] == tuple(int(v) for v in np.linspace(10, 75, 5))
    np.testing.assert_allclose(PAPER_INTENSITIES["crop"], np.linspace(0.05, 0.2, 5), rtol=0, atol=1e-15)
    table = {p: [paper_view(p, i) for i in range(1, 6)] for p in ("resize", "blur", "jpeg", "crop")}
    assert table == {
        "resize": ["shortside:128", "shortside:352", "shortside:576", "shortside:800", "shortside:1024"],
        "blur": ["blurk:3", "blurk:5", "blurk:9", "blurk:11", "blurk:15"],
        "jpeg": ["jpeg:10", "jpeg:26", "jpeg:42", "jpeg:58", "jpeg:75"],
        "crop": ["rcrop:0.05", "rcrop:0.0875", "rcrop:0.125", "rcrop:0.1625", "rcrop:0.2"]}
    for specs in table.values():
        assert all(View.parse(s).spec == s for s in specs)  # canonical: they name feature sets as written
    with pytest.raises(ViewError, match="perturbation 'noise': use one of resize, blur, jpeg, crop"):
        paper_view("noise", 1)
    for bad in (0, 6, 2.0, True):
        with pytest.raises(ViewError, match="use an integer from 1 to 5"):
            paper_view("jpeg", bad)


def test_paper_view_specs_parse_strictly() -> None:
    assert View.parse("paper-train-aug").spec == "paper-train-aug"
    assert View.parse("Paper-Train-Aug + jpeg:75").spec == "paper-train-aug+jpeg:75"
    assert View.parse("shortside:352.0").spec == "shortside:352"
    for spec, msg in [("blurk:4", "blurk needs odd Gaussian kernel size"), ("blurk:0", "blurk needs odd"),
                      ("shortside:0", "shortside needs shortest side"), ("shortside:1.5", "shortside needs"),
                      ("rcrop:0", "rcrop needs area fraction"), ("rcrop:1.5", "rcrop needs area fraction"),
                      ("paper-train-aug:3", "paper-train-aug takes no value; write just paper-train-aug"),
                      ("shortside", "'shortside' is not a view")]:
        with pytest.raises(ViewError, match=re.escape(msg)):
            View.parse(spec)
    with pytest.raises(ViewError, match=r"shortside:<shortest side.*paper-train-aug <one of the paper's"):
        View.parse("sharpen:2")  # the error lists every view


@pytest.mark.parametrize("img", [PORTRAIT, LANDSCAPE], ids=["portrait", "landscape"])
def test_shortside_blurk_and_jpeg_equal_torchvision(img: Image.Image) -> None:
    """The paper's test-time transforms as its code builds them: v2 Resize(int(N)), v2 GaussianBlur(K,
    sigma=3.0), v2 JPEG((Q, Q)), on the PIL image."""
    from torchvision.transforms import v2

    for n in PAPER_INTENSITIES["resize"] + (100, 187):
        got = View.parse(f"shortside:{n}")(img, "k")
        assert min(got.size) == n
        np.testing.assert_array_equal(_arr(got), _arr(v2.Resize(size=n)(img)))
    for k in PAPER_INTENSITIES["blur"]:
        np.testing.assert_array_equal(_arr(View.parse(f"blurk:{k}")(img, "k")),
                                      _arr(v2.GaussianBlur(kernel_size=k, sigma=3.0)(img)))
    for q in PAPER_INTENSITIES["jpeg"]:
        np.testing.assert_array_equal(_arr(View.parse(f"jpeg:{q}")(img, "k")),
                                      _arr(v2.JPEG((q, q))(img).convert("RGB")))


def test_blurk_is_a_sigma_3_gaussian_by_hand() -> None:
    """Independent of torchvision: separable kernel exp(-d^2 / (2 * 3^2)), reflect padding, rounded."""
    src = np.asarray(LANDSCAPE, dtype=np.float64)
    for k in (3, 9, 15):
        d = np.arange(k) - k // 2
        g = np.exp(-d ** 2 / (2 * 3.0 ** 2))
        g /= g.sum()
        pad = np.pad(src, ((k // 2, k // 2), (k // 2, k // 2), (0, 0)), mode="reflect")
        rows = sum(g[i] * pad[i:i + src.shape[0]] for i in range(k))
        hand = sum(g[i] * rows[:, i:i + src.shape[1]] for i in range(k))
        got = _arr(View.parse(f"blurk:{k}")(LANDSCAPE, "k"))
        assert np.abs(got - np.rint(hand)).max() <= 1  # float32 vs float64 at .5 boundaries
        assert (got == np.rint(hand)).mean() > 0.99


def test_rcrop_is_torchvisions_random_resized_crop_seeded_per_path() -> None:
    """The crop box follows RandomResizedCrop's draw (scale fixed at S, as the paper's (S, S)); the box is
    cut and resized to 224 x 224 as torchvision's resized_crop does; the draw comes from the path's seed."""
    from torchvision.transforms.v2 import functional as F

    for s in PAPER_INTENSITIES["crop"]:
        spec = f"rcrop:{s}"
        for key in ("gen/a.png", "gen/b.png", "real/c.jpg"):
            top, left, h, w = resized_crop_box(PORTRAIT.width, PORTRAIT.height, (s, s), view_rng(spec, key))
            assert 3 / 4 - 0.05 < w / h < 4 / 3 + 0.05
            assert abs(h * w - s * PORTRAIT.width * PORTRAIT.height) < (h + w + 1)  # the area, up to rounding
            assert 0 <= top <= PORTRAIT.height - h and 0 <= left <= PORTRAIT.width - w
            got = View.parse(spec)(PORTRAIT, key)
            assert got.size == (224, 224)
            np.testing.assert_array_equal(_arr(got), _arr(F.resized_crop(PORTRAIT, top, left, h, w, [224, 224])))
            np.testing.assert_array_equal(_arr(View.parse(spec)(PORTRAIT, key)), _arr(got))  # same draw twice
        one, two = View.parse(spec)(PORTRAIT, "x/1.png"), View.parse(spec)(PORTRAIT, "x/2.png")
        assert not np.array_equal(_arr(one), _arr(two))


def test_rcrop_fallback_is_torchvisions_central_crop() -> None:
    """When no draw fits (a sliver at full scale), torchvision falls back to a central crop: no randomness
    left, so our box must equal torchvision's own make_params exactly."""
    from torchvision.transforms import v2

    for size in [(400, 30), (30, 400), (50, 60)]:
        img = Image.new("RGB", size)
        want = v2.RandomResizedCrop((224, 224), scale=(1.0, 1.0), ratio=(3 / 4, 4 / 3)).make_params([img])
        if size == (50, 60):  # fits the ratio: the whole image, whatever the draw
            assert want == dict(top=0, left=0, height=60, width=50)
        box = resized_crop_box(*size, (1.0, 1.0), np.random.default_rng(0))
        assert box == (want["top"], want["left"], want["height"], want["width"]), size


def test_paper_train_aug_draws_one_of_the_four_per_path_reproducibly() -> None:
    """Each path gets one of RandomShortestSize(128, 1024), GaussianBlur((3, 15), 3.0), JPEG((10, 75)),
    RandomResizedCrop((224, 224), scale=(0.05, 0.2)), drawn from its own seed: recomputed here by hand."""
    from torchvision.transforms import v2
    from torchvision.transforms.v2 import functional as F

    view = View.parse("paper-train-aug")
    seen = set()
    for i in range(40):
        key = f"gen/{i}.png"
        got = _arr(view(PORTRAIT, key))
        np.testing.assert_array_equal(_arr(view(PORTRAIT, key)), got)
        rng = view_rng("paper-train-aug", key)
        pick = ("resize", "blur", "jpeg", "crop")[int(rng.integers(4))]
        seen.add(pick)
        if pick == "resize":
            want = v2.RandomShortestSize(min_size=128, max_size=1024)(PORTRAIT)
            assert want.size == (127, 206)  # torchvision truncates int(187 * (128 / 187)) to 127, as we do
        elif pick == "blur":
            want = v2.GaussianBlur(kernel_size=(3, 15), sigma=3.0)(PORTRAIT)
        elif pick == "jpeg":
            q = int(rng.integers(10, 76))
            want = v2.JPEG((q, q))(PORTRAIT).convert("RGB")
        else:
            top, left, h, w = resized_crop_box(PORTRAIT.width, PORTRAIT.height, TRAIN_CROP_SCALE, rng)
            want = F.resized_crop(PORTRAIT, top, left, h, w, [224, 224])
        np.testing.assert_array_equal(got, _arr(want), err_msg=f"{key}: {pick}")
    assert seen == {"resize", "blur", "jpeg", "crop"}
    # the (3, 15) kernel is 3 wide and 15 high, as torchvision reads kernel_size=(kx, ky)
    blur = v2.GaussianBlur(kernel_size=(3, 15), sigma=3.0)(LANDSCAPE)
    assert not np.array_equal(_arr(blur), _arr(v2.GaussianBlur(kernel_size=(15, 3), sigma=3.0)(LANDSCAPE)))


def test_random_shortest_size_caps_the_long_side() -> None:
    """RandomShortestSize(128, 1024): shortest side 128 unless the longest would pass 1024."""
    from torchvision.transforms import v2

    sliver = Image.fromarray(np.random.default_rng(3).integers(0, 256, (20, 400, 3), dtype=np.uint8))
    key = next(f"k{i}" for i in range(100) if int(view_rng("paper-train-aug", f"k{i}").integers(4)) == 0)
    got = View.parse("paper-train-aug")(sliver, key)
    want = v2.RandomShortestSize(min_size=128, max_size=1024)(sliver)
    assert got.size == want.size == (1024, 51)
    np.testing.assert_array_equal(_arr(got), _arr(want))


def test_features_help_lists_every_view() -> None:
    text = "".join(CliRunner().invoke(main, ["features", "--help"]).output.split())  # wrapping aside
    for name in list(VIEWS) + list(PAPER_VIEWS) + list(NAMED_VIEWS):
        assert name in text, name
