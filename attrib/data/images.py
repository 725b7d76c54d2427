"""Safe image decoding: the one place that knows Pillow's quirks.

A two-day extraction must never die on one bad file, and must never silently feed the model a wrong
picture (a 16-bit PNG clipped to white, a CMYK JPEG with inverted colours, a photo lying on its side).
So every image goes through :func:`load_rgb`, which either returns an honest 8-bit RGB image or raises
:class:`ImageDecodeError` with a message that ends up in the cache's ``error`` column.
"""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Larger than any real photograph or generator output (GenImage tops out near 4k x 4k), far below what
# would exhaust memory in a DataLoader worker. Bigger images are recorded as failures, not decoded.
MAX_PIXELS = 64_000_000
# A file this large is not a picture we want to decode in a worker either (guards e.g. a 40 GB TIFF).
MAX_BYTES = 256 * 1024 * 1024

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is a failure, never a half-grey picture


class ImageDecodeError(Exception):
    """The file is not an image we can decode faithfully; the message says why."""


_OBJECT_AT = re.compile(r" at 0x[0-9a-fA-F]+")  # "<_io.BytesIO object at 0x7f58...>" -> "<_io.BytesIO object>"
_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{8,}\b")  # any other pointer-sized hex number


def error_text(exc: BaseException) -> str:
    """``Type: message`` of an exception, fit for the cache's ``error`` column.

    The column is part of each shard's checksum, so the text must be the same on every run: object reprs
    in messages (``<_io.BytesIO object at 0x7f58...>``) carry memory addresses, which are dropped.
    """
    msg = _ADDRESS.sub("<address>", _OBJECT_AT.sub("", str(exc)))
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _range_of(arr: np.ndarray, mode: str) -> tuple[float, float]:
    """(min, max) of single-channel pixel data, refusing what has no display range.

    A float image stores no range: it may hold 0..1, 0..255 or 0..65535 values, or measurements that
    are not a picture at all (negative, NaN, huge). The first three are recognised by their maximum;
    the rest fail, because a guessed stretch would feed the model a picture nobody looked at.
    """
    if arr.size == 0:
        return 0.0, 0.0
    if mode == "F" and not np.isfinite(arr).all():
        raise ImageDecodeError(f"mode {mode} image with NaN or infinite pixel values: not a picture attrib can show")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0:
        raise ImageDecodeError(f"mode {mode} image with negative pixel values (min {lo:g}): no standard display "
                               "range; convert it to 8-bit first")
    if mode == "F" and hi > 65535:
        raise ImageDecodeError(f"mode F image with values up to {hi:g}: not 0-1, 0-255 or 0-65535 data, no "
                               "standard display range; convert it to 8-bit first")
    return lo, hi


def _to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Scale single-channel integer or float pixel data of any depth to 0..255 without clipping.

    ``I;16*`` is 16-bit by definition. ``I`` (32-bit ints, often 16-bit data in disguise) and ``F``
    (floats) carry no range, so their maximum decides: up to 1.0 (floats only) is 0..1 data, up to 255
    is 8-bit data, up to 65535 is 16-bit data; ``I`` beyond that is stretched to its maximum.
    """
    if mode.startswith("I;16"):
        return (arr.astype(np.uint32) >> 8).astype(np.uint8)
    _, hi = _range_of(arr, mode)
    if mode == "F":
        scale = 255.0 if hi <= 1.0 else 1.0 if hi <= 255.0 else 255.0 / 65535.0
        return np.clip(arr * scale, 0, 255).astype(np.uint8)
    if hi <= 255:
        return arr.clip(0, 255).astype(np.uint8)
    if hi <= 65535:
        return (arr.clip(0, 65535).astype(np.uint32) >> 8).astype(np.uint8)
    return (arr.clip(0, None).astype(np.float64) * (255.0 / hi)).astype(np.uint8)


# Pillow modes and how each becomes RGB. A mode not named here (a future Pillow's) is refused rather
# than passed to ``convert``, whose result for it nobody has checked.
_SINGLE_CHANNEL_DEEP = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})  # rescaled by _to_uint8
_PREMULTIPLIED = {"RGBa": "RGBA", "La": "LA"}  # alpha-premultiplied: un-premultiply, then drop alpha
_CONVERTS = frozenset({"1", "L", "LA", "P", "PA", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"})  # Pillow's own


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB the way a human would see the image.

    Alpha is dropped (not composited), which is what the reference CLIP pipeline does with
    ``convert('RGB')``; 16-bit and float data are rescaled rather than clipped (see :func:`_to_uint8`);
    CMYK, YCbCr, LAB and HSV go through Pillow's colour conversions. Raises :class:`ImageDecodeError`
    for data with no display range and for modes this function does not know.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _SINGLE_CHANNEL_DEEP:
        arr = _to_uint8(np.asarray(img), mode)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if mode in _PREMULTIPLIED:
        return img.convert(_PREMULTIPLIED[mode]).convert("RGB")
    if mode == "P" and "transparency" in img.info:
        return img.convert("RGBA").convert("RGB")
    if mode in _CONVERTS:
        return img.convert("RGB")
    raise ImageDecodeError(f"Pillow mode {mode!r}: not a pixel format attrib knows how to show as RGB")


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode ``path`` to an upright 8-bit RGB image.

    Raises :class:`ImageDecodeError` for anything that is not a faithful picture: missing, empty,
    oversized, truncated or unidentifiable files.
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise ImageDecodeError(f"cannot read file: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ImageDecodeError("not a regular file")
    if st.st_size == 0:
        raise ImageDecodeError("empty file (0 bytes)")
    if st.st_size > MAX_BYTES:
        raise ImageDecodeError(f"file too large ({st.st_size} bytes > {MAX_BYTES})")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"cannot read file: {exc.strerror or exc}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageDecodeError(f"image too large ({w}x{h} = {w * h} pixels > {MAX_PIXELS})")
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)  # animated GIF / multi-page TIFF: the first frame is the picture
            img.load()
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"image too large (decompression-bomb guard): {exc}") from None
    except UnidentifiedImageError:  # its message is the repr of our in-memory buffer, address included
        raise ImageDecodeError("not an image Pillow can read (UnidentifiedImageError): unknown format or "
                               "corrupt header") from None
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, struct.error, ...
        raise ImageDecodeError(error_text(exc)) from None


IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".jfif", ".ppm", ".pgm"}
)


def is_image_name(name: str) -> bool:
    """Cheap test on the file name only: listing millions of files must not open any of them."""
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES
