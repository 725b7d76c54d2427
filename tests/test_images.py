"""Safe decoding: every odd or broken file becomes an honest RGB picture or a clear error, never a crash.

``write_zoo`` writes real files with Pillow; the extraction tests reuse it to check that each one becomes
an ok row or a failed row with its error text.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attrib.data import images as imgmod
from attrib.data.images import ImageDecodeError, load_rgb

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)  # 30 wide, 20 high
GRAY16 = (RNG.integers(0, 65536, (20, 30))).astype(np.uint16)
PALETTE = [255, 0, 0, 0, 255, 0, 0, 0, 255] + [7] * (256 * 3 - 9)


def _exif_rotated_jpeg(path: Path) -> None:
    """Stored 40x20 (left half black, right half white) with EXIF orientation 6 (rotate 90 clockwise)."""
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, 20:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(path, exif=exif, quality=95)


def write_zoo(root: Path) -> dict[str, str]:
    """Write the zoo under ``root``; returns file name -> '' (must decode) or a substring of its error."""
    root.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RGB).save(root / "rgb.png")
    Image.fromarray(RGB[..., 0]).save(root / "gray.png")
    Image.fromarray(GRAY16).save(root / "gray16.png")  # 16-bit PNG
    Image.fromarray(np.dstack([RGB, RGB[..., :1]])).save(root / "rgba.png")
    pal = Image.fromarray((RGB[..., 0] % 3).astype(np.uint8), mode="P")
    pal.putpalette(PALETTE)
    pal.info["transparency"] = 0
    pal.save(root / "palette_transparent.png", transparency=0)
    Image.fromarray(RGB).convert("CMYK").save(root / "cmyk.jpg", quality=95)
    Image.fromarray(RGB).convert("CMYK").save(root / "cmyk.tif")
    _exif_rotated_jpeg(root / "exif_rotated.jpg")
    frames = [Image.fromarray(np.full((10, 10, 3), v, np.uint8)) for v in (10, 200)]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:])
    good = io.BytesIO()
    Image.fromarray(RGB).save(good, format="PNG")
    data = good.getvalue()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    jpg = io.BytesIO()
    Image.fromarray(RGB).save(jpg, format="JPEG")
    (root / "truncated.jpg").write_bytes(jpg.getvalue()[: len(jpg.getvalue()) // 2])
    (root / "broken.png").write_bytes(data[:16] + bytes(RNG.integers(0, 256, 200, dtype=np.uint8)))
    (root / "zero.png").write_bytes(b"")
    (root / "text.jpg").write_text("this is not an image\n")
    Image.new("1", (10_000, 10_000)).save(root / "bomb.png")  # 100 Mpx in a few kB
    Image.fromarray(RGB[..., 0].astype(np.float32), mode="F").save(root / "float255.tif")  # 0..255 floats
    nan = RGB[..., 0].astype(np.float32)
    nan[0, 0] = np.nan
    Image.fromarray(nan, mode="F").save(root / "float_nan.tif")
    return {"rgb.png": "", "gray.png": "", "gray16.png": "", "rgba.png": "", "palette_transparent.png": "",
            "cmyk.jpg": "", "cmyk.tif": "", "exif_rotated.jpg": "", "animated.gif": "",
            "truncated.png": "truncated", "truncated.jpg": "truncated",
            "broken.png": "not an image Pillow can read (UnidentifiedImageError)",
            "zero.png": "empty file (0 bytes)", "text.jpg": "not an image Pillow can read (UnidentifiedImageError)",
            "bomb.png": "image too large", "float255.tif": "", "float_nan.tif": "NaN or infinite pixel values"}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("zoo")
    return root, write_zoo(root)


def _px(path: Path) -> np.ndarray:
    img = load_rgb(path)
    assert img.mode == "RGB"
    return np.asarray(img)


def test_every_zoo_file_decodes_faithfully_or_fails_with_its_reason(zoo) -> None:
    root, expect = zoo
    for name, err in expect.items():
        if err:
            with pytest.raises(ImageDecodeError) as exc:
                load_rgb(root / name)
            assert err.lower() in str(exc.value).lower(), (name, str(exc.value))
        else:
            assert _px(root / name).ndim == 3, name


def test_error_texts_are_the_same_on_every_run(zoo) -> None:
    """The error text is stored in the cache and checksummed with its shard: Pillow's own message for an
    unreadable file names our in-memory buffer by its memory address, which differs on every run."""
    root, expect = zoo
    for name in (n for n, err in expect.items() if err):
        texts = set()
        for _ in range(2):
            with pytest.raises(ImageDecodeError) as exc:
                load_rgb(root / name)
            texts.add(str(exc.value))
        assert len(texts) == 1 and "0x" not in texts.pop(), name


def test_error_text_drops_memory_addresses() -> None:
    """Any exception (Pillow's, a view's, a transform's) reaches the error column through error_text."""
    buf = io.BytesIO()
    assert imgmod.error_text(OSError(f"cannot read {buf!r}")) == "OSError: cannot read <_io.BytesIO object>"
    assert imgmod.error_text(ValueError(f"bad pointer {hex(id(buf))}")) == "ValueError: bad pointer <address>"
    assert imgmod.error_text(ValueError("invalid marker 0xFFD8")) == "ValueError: invalid marker 0xFFD8"
    assert imgmod.error_text(KeyError()) == "KeyError"


def test_modes_are_converted_the_way_a_person_sees_them(zoo) -> None:
    root, _ = zoo
    np.testing.assert_array_equal(_px(root / "rgb.png"), RGB)
    np.testing.assert_array_equal(_px(root / "gray.png"), np.repeat(RGB[..., :1], 3, axis=2))
    np.testing.assert_array_equal(_px(root / "gray16.png")[..., 1], (GRAY16 >> 8).astype(np.uint8))  # not clipped
    np.testing.assert_array_equal(_px(root / "rgba.png"), RGB)  # alpha dropped, colours kept
    pal = np.array(PALETTE[:9], np.uint8).reshape(3, 3)
    np.testing.assert_array_equal(_px(root / "palette_transparent.png"), pal[RGB[..., 0] % 3])
    cmyk_ref = np.asarray(Image.fromarray(RGB).convert("CMYK").convert("RGB"))
    np.testing.assert_array_equal(_px(root / "cmyk.tif"), cmyk_ref)
    assert np.abs(_px(root / "cmyk.jpg").astype(int) - cmyk_ref).mean() < 12  # lossy, but not inverted
    assert _px(root / "animated.gif").mean() < 20  # the first frame


def test_exif_orientation_is_applied(zoo) -> None:
    px = _px(zoo[0] / "exif_rotated.jpg")
    assert px.shape == (40, 20, 3)  # stored 40x20 landscape, shown 20x40 portrait
    assert px[:15].mean() < 30 and px[25:].mean() > 225  # the black left half is now on top


def test_size_limits_and_unreadable_paths(tmp_path: Path, monkeypatch) -> None:
    p = tmp_path / "a.png"
    Image.fromarray(RGB).save(p)
    with pytest.raises(ImageDecodeError, match="not a regular file"):
        load_rgb(tmp_path)  # a folder
    with pytest.raises(ImageDecodeError, match="cannot read file"):
        load_rgb(tmp_path / "missing.png")
    monkeypatch.setattr(imgmod, "MAX_BYTES", 100)
    with pytest.raises(ImageDecodeError, match=r"file too large \(\d+ bytes > 100\)"):
        load_rgb(p)
    monkeypatch.setattr(imgmod, "MAX_BYTES", 1 << 20)
    monkeypatch.setattr(imgmod, "MAX_PIXELS", 599)
    with pytest.raises(ImageDecodeError, match=r"image too large \(30x20 = 600 pixels > 599\)"):
        load_rgb(p)


def test_float_and_32bit_integer_images_are_rescaled_not_clipped(tmp_path: Path) -> None:
    f = RNG.random((8, 8)).astype(np.float32)
    Image.fromarray(f, mode="F").save(tmp_path / "f.tif")
    np.testing.assert_array_equal(_px(tmp_path / "f.tif")[..., 0], (f * 255).astype(np.uint8))
    i = (GRAY16[:8, :8].astype(np.int32))
    Image.fromarray(i, mode="I").save(tmp_path / "i.tif")
    np.testing.assert_array_equal(_px(tmp_path / "i.tif")[..., 0], (i >> 8).astype(np.uint8))


# ---------------------------------------------------------------- floating-point and deep modes
def _tif(path: Path, img: Image.Image) -> Path:
    img.save(path)
    assert Image.open(path).mode == img.mode, "Pillow wrote another mode than the test means to check"
    return path


def test_float_images_of_every_range_decode_as_their_values_say(tmp_path: Path) -> None:
    """A float32 TIFF of 0..255 values decoded all black (scaled as if it held 0..65535) and was recorded ok."""
    gray = RGB[..., 0].astype(np.float32)
    for name, data in (("f255", gray), ("f1", gray / 255), ("f65535", gray * 257)):
        px = _px(_tif(tmp_path / f"{name}.tif", Image.fromarray(data.astype(np.float32), mode="F")))
        np.testing.assert_allclose(px[..., 0].astype(int), RGB[..., 0].astype(int), atol=1, err_msg=name)
        assert (px[..., 0] == px[..., 2]).all()


@pytest.mark.parametrize("values, why", [
    ([0.0, np.inf], "NaN or infinite pixel values"),
    ([-1.0, 200.0], "negative pixel values (min -1)"),
    ([0.0, 70000.0], "values up to 70000: not 0-1, 0-255 or 0-65535 data"),
])
def test_float_images_without_a_display_range_fail_with_the_reason(tmp_path: Path, values, why) -> None:
    data = np.resize(np.array(values, np.float32), (8, 8))
    path = _tif(tmp_path / "f.tif", Image.fromarray(data, mode="F"))
    with pytest.raises(ImageDecodeError, match=re.escape(why)):
        load_rgb(path)


def test_signed_integer_images_fail_instead_of_clipping(tmp_path: Path) -> None:
    data = np.resize(np.array([-300, 0, 300], np.int32), (8, 8))
    path = _tif(tmp_path / "i.tif", Image.fromarray(data, mode="I"))
    with pytest.raises(ImageDecodeError, match=r"mode I image with negative pixel values \(min -300\)"):
        load_rgb(path)


def test_16_bit_big_endian_tiff_is_rescaled(tmp_path: Path) -> None:
    big = Image.frombytes("I;16B", (30, 20), GRAY16.astype(">u2").tobytes())
    px = _px(_tif(tmp_path / "b.tif", big))
    np.testing.assert_array_equal(px[..., 0], (GRAY16 >> 8).astype(np.uint8))


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "PA", "CMYK", "YCbCr", "LAB", "RGBA", "I", "F"])
def test_every_mode_pillow_writes_to_tiff_decodes_like_pillows_own_conversion(tmp_path: Path, mode: str) -> None:
    """Each mode a TIFF can hold, written by Pillow from one RGB picture, must come back as that picture seen
    through the mode (Pillow's conversion of the in-memory image), never black, white or channel-swapped."""
    img = Image.fromarray(RGB).convert(mode)
    want = np.asarray(img.convert("L").convert("RGB") if mode in ("I", "F") else img.convert("RGB")).astype(int)
    got = _px(_tif(tmp_path / f"{mode}.tif", img)).astype(int)
    assert np.abs(got - want).max() <= 1, mode
    assert got.std() > 20  # a picture, not a flat field


@pytest.mark.parametrize("mode", ["HSV", "RGBa", "La", "RGBX", "I;16L", "I;16N"])
def test_modes_no_file_format_writes_convert_too(mode: str) -> None:
    """Modes only made in memory (or by decoders of other formats) go through the same function."""
    src = Image.fromarray(RGB)
    img = Image.new(mode, src.size, 40000) if mode.startswith("I;16") else src.convert(mode)
    out = imgmod.to_rgb(img)
    assert out.mode == "RGB" and out.size == src.size
    if mode.startswith("I;16"):
        assert (np.asarray(out) == 40000 >> 8).all()
        return
    want = RGB if mode != "La" else np.asarray(src.convert("L").convert("RGB"))
    tolerance = 8 if mode == "HSV" else 0  # HSV stores hue in 256 steps: a few levels off, never another colour
    assert np.abs(np.asarray(out).astype(int) - want.astype(int)).max() <= tolerance


def test_an_unknown_pixel_mode_is_refused_not_guessed() -> None:
    class Future:  # what a future Pillow could hand over: only the mode is looked at
        mode = "RGB;30"
        info: dict = {}

    with pytest.raises(ImageDecodeError, match=r"Pillow mode 'RGB;30': not a pixel format attrib knows"):
        imgmod.to_rgb(Future())  # type: ignore[arg-type]
