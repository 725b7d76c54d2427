"""Views: deterministic image perturbations applied before the model's own transform.

Why: GenImage's real images are JPEG and most generated ones PNG, a shortcut any classifier learns;
``jpeg:Q`` re-encodes everything so that only the generator's traces remain. The other views serve the
paper's robustness study. Each view gives its own feature set (the view is part of its identity), and
random views are seeded per image (from the view's spec and the image's path), so reruns and resumed runs
are identical.

Spec grammar: ``none`` or ``step[+step...]``, applied left to right, where a step is ``name:value`` (e.g.
``jpeg:75``, ``resize:0.5+jpeg:90``) or a named view without a value (``paper-train-aug``).

The paper's robustness perturbations (``ciodar/UniversalAttribution``, ``utils/data/perturbations.py``:
torchvision v2 transforms applied to the RGB PIL image before its preprocessing) are views too, exactly as
the paper's code applies them: ``shortside:N``, ``blurk:K``, ``jpeg:Q``, ``rcrop:S`` at test time, at the
intensities of :data:`PAPER_INTENSITIES` (see :func:`paper_view`), and ``paper-train-aug`` (one of its four
training perturbations per image) for training features.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from attrib.data.catalog import seeded_key
from attrib.data.images import MAX_PIXELS
from attrib.errors import AttribError


class ViewError(AttribError, ValueError):
    """A --view spec that cannot be parsed; the message lists the valid forms."""


def _number(v: float) -> str:
    """Exact text of a view value, as it appears in the view's canonical spec and feature-set name.

    ``{v:g}`` when that reads back as the same float: it gives the names existing feature sets carry
    (``jpeg:75``, ``blur:1``, ``resize:0.5``). Otherwise (``{1.0000001:g}`` is ``1``) the shortest text that
    reads back exactly, so different values never share a feature set. No ``+`` in exponents (``1e06``,
    not ``1e+06``): ``+`` joins views, and a saved spec must parse back (``attrib predict`` does).
    """
    text = f"{v:g}"
    if float(text) != v:
        text = repr(v)
        text = text[:-2] if text.endswith(".0") else text
    return text.replace("e+", "e")


def _jpeg(img: Image.Image, q: float, _rng: np.random.Generator) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(q))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _blur(img: Image.Image, sigma: float, _rng: np.random.Generator) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(radius=sigma))


def _noise(img: Image.Image, std: float, rng: np.random.Generator) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32)
    arr = arr + rng.normal(0.0, std, size=arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))


def _enhance(cls) -> Callable[[Image.Image, float, np.random.Generator], Image.Image]:
    return lambda img, factor, _rng: cls(img).enhance(factor)


def _rotate(img: Image.Image, deg: float, _rng: np.random.Generator) -> Image.Image:
    return img.rotate(deg, resample=Image.BILINEAR, expand=False)


def _resize(img: Image.Image, factor: float, _rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    if size[0] * size[1] > MAX_PIXELS:
        raise ValueError(f"resize:{_number(factor)} of a {w}x{h} image would exceed {MAX_PIXELS} pixels")
    return img.resize(size, Image.BICUBIC)


# name -> (function, validity check, meaning of the value)
VIEWS: dict[str, tuple[Callable, Callable[[float], bool], str]] = {
    "jpeg": (_jpeg, lambda v: 1 <= v <= 100 and v == int(v), "JPEG quality 1..100"),
    "blur": (_blur, lambda v: v > 0, "Gaussian blur sigma in pixels (> 0)"),
    "noise": (_noise, lambda v: v > 0, "Gaussian noise std in 8-bit levels (> 0)"),
    "brightness": (_enhance(ImageEnhance.Brightness), lambda v: v >= 0, "brightness factor (1 = unchanged)"),
    "contrast": (_enhance(ImageEnhance.Contrast), lambda v: v >= 0, "contrast factor (1 = unchanged)"),
    "saturation": (_enhance(ImageEnhance.Color), lambda v: v >= 0, "saturation factor (1 = unchanged)"),
    "rotate": (_rotate, lambda v: -360 <= v <= 360, "rotation in degrees, counter-clockwise"),
    "resize": (_resize, lambda v: 0 < v <= 8, "scale factor (0 < F <= 8)"),
}


# ------------------------------------------------------------------------ the paper's perturbations
# Facts from the paper's code (configs/base.py, utils/data/perturbations.py). Its crops are resized to its
# input size, 224 x 224, whatever model follows; the preprocessing then maps them to the model's input.
PAPER_CROP_SIZE = (224, 224)
PAPER_BLUR_SIGMA = 3.0
CROP_RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's default aspect-ratio range, which the paper keeps
TRAIN_SHORTEST_SIDE = (128, 1024)  # RandomShortestSize(min_size=128, max_size=1024)
TRAIN_BLUR_KERNEL = (3, 15)  # GaussianBlur(kernel_size=(3, 15)): 3 wide, 15 high, as written
TRAIN_JPEG_QUALITY = (10, 75)  # JPEG((10, 75)): a quality drawn uniformly from 10..75
TRAIN_CROP_SCALE = (0.05, 0.2)  # RandomResizedCrop((224, 224), scale=(0.05, 0.2))
TRAIN_PERTURBATIONS = ("resize", "blur", "jpeg", "crop")  # the paper's RandomChoice, equal odds

# Test-time intensities 1..5 (the paper's linspace over each range; blur kernels made odd by -1).
PAPER_INTENSITIES: dict[str, tuple[float, ...]] = {
    "resize": (128, 352, 576, 800, 1024),  # shortest side in px: int(linspace(128, 1024, 5))
    "blur": (3, 5, 9, 11, 15),  # kernel size, sigma 3.0: linspace(3, 15, 5) -> 3, 6->5, 9, 12->11, 15
    "jpeg": (10, 26, 42, 58, 75),  # JPEG quality: int(linspace(10, 75, 5))
    "crop": (0.05, 0.0875, 0.125, 0.1625, 0.2),  # area fraction of the crop: linspace(0.05, 0.2, 5)
}
_PAPER_VIEW_OF = {"resize": "shortside", "blur": "blurk", "jpeg": "jpeg", "crop": "rcrop"}


def paper_view(perturbation: str, intensity: int) -> str:
    """The view spec of the paper's test-time ``perturbation`` (resize, blur, jpeg, crop) at ``intensity``
    1..5, e.g. ``("resize", 2)`` -> ``shortside:352``, ``("crop", 3)`` -> ``rcrop:0.125``."""
    if perturbation not in PAPER_INTENSITIES:
        raise ViewError(f"perturbation {perturbation!r}: use one of {', '.join(PAPER_INTENSITIES)}")
    if isinstance(intensity, bool) or not isinstance(intensity, (int, np.integer)) or not 1 <= intensity <= 5:
        raise ViewError(f"intensity {intensity!r}: use an integer from 1 to 5 (the paper's five levels)")
    return f"{_PAPER_VIEW_OF[perturbation]}:{_number(float(PAPER_INTENSITIES[perturbation][intensity - 1]))}"


def _resized(img: Image.Image, size: tuple[int, int], what: str,
             resample: Image.Resampling = Image.BILINEAR) -> Image.Image:
    """``img`` resized to ``size`` (w, h) as torchvision resizes a PIL image (PIL's antialiased filter;
    unchanged when the size is); sizes that are empty or too large fail with the view's name."""
    w, h = size
    if w < 1 or h < 1 or w * h > MAX_PIXELS:
        raise ValueError(f"{what} of a {img.width}x{img.height} image gives {w}x{h} pixels (allowed: 1 to "
                         f"{MAX_PIXELS} pixels)")
    return img if img.size == (w, h) else img.resize((w, h), resample)


def shortest_side_size(width: int, height: int, side: int) -> tuple[int, int]:
    """(w, h) after torchvision ``Resize(side)``: the shorter side becomes ``side``, the longer one
    ``int(side * long / short)`` (truncated, as torchvision does), so the aspect ratio is kept."""
    short, long = min(width, height), max(width, height)
    new_long = int(side * long / short)
    return (side, new_long) if width <= height else (new_long, side)


def random_shortest_size(width: int, height: int, min_size: int, max_size: int) -> tuple[int, int]:
    """(w, h) after torchvision ``RandomShortestSize(min_size, max_size)``: one scale factor for both
    sides, the one that makes the shorter side ``min_size`` unless the longer would exceed ``max_size``."""
    r = min(min_size / min(height, width), max_size / max(height, width))
    return int(width * r), int(height * r)


def resized_crop_box(width: int, height: int, scale: tuple[float, float], rng: np.random.Generator,
                     ratio: tuple[float, float] = CROP_RATIO) -> tuple[int, int, int, int]:
    """(top, left, h, w) of torchvision ``RandomResizedCrop``'s crop, drawn from ``rng``: up to ten draws of
    an area fraction uniform in ``scale`` and a log-uniform aspect ratio in ``ratio``, the first crop that
    fits placed uniformly; else the central crop of the largest box within ``ratio``."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _resized_crop(img: Image.Image, scale: tuple[float, float], rng: np.random.Generator) -> Image.Image:
    top, left, h, w = resized_crop_box(img.width, img.height, scale, rng)
    return _resized(img.crop((left, top, left + w, top + h)), PAPER_CROP_SIZE, "rcrop")


def _gaussian_blur(img: Image.Image, kernel: tuple[int, int], sigma: float) -> Image.Image:
    """torchvision's ``GaussianBlur`` on a PIL image, through torchvision itself: a (kx, ky) kernel with
    reflect padding on the 8-bit data, rounded back. torchvision is imported here, not at module import,
    so parsing specs (``--help``, the CLI) stays light."""
    from torchvision.transforms.v2 import functional as F

    if img.width <= kernel[0] // 2 or img.height <= kernel[1] // 2:
        raise ValueError(f"a {kernel[0]}x{kernel[1]} blur kernel needs an image larger than "
                         f"{kernel[0] // 2}x{kernel[1] // 2} pixels, got {img.width}x{img.height}")
    return F.gaussian_blur(img, list(kernel), [sigma, sigma])


def _shortside(img: Image.Image, side: float, _rng: np.random.Generator) -> Image.Image:
    return _resized(img, shortest_side_size(img.width, img.height, int(side)), f"shortside:{int(side)}")


def _blurk(img: Image.Image, k: float, _rng: np.random.Generator) -> Image.Image:
    return _gaussian_blur(img, (int(k), int(k)), PAPER_BLUR_SIGMA)


def _rcrop(img: Image.Image, s: float, rng: np.random.Generator) -> Image.Image:
    return _resized_crop(img, (s, s), rng)


def _paper_train_aug(img: Image.Image, _value: None, rng: np.random.Generator) -> Image.Image:
    """One of the paper's four training perturbations, chosen with equal odds, with its random values."""
    pick = TRAIN_PERTURBATIONS[int(rng.integers(len(TRAIN_PERTURBATIONS)))]
    if pick == "resize":
        size = random_shortest_size(img.width, img.height, *TRAIN_SHORTEST_SIDE)
        return _resized(img, size, "paper-train-aug (RandomShortestSize)")
    if pick == "blur":
        return _gaussian_blur(img, TRAIN_BLUR_KERNEL, PAPER_BLUR_SIGMA)
    if pick == "jpeg":
        lo, hi = TRAIN_JPEG_QUALITY
        return _jpeg(img, int(rng.integers(lo, hi + 1)), rng)
    return _resized_crop(img, TRAIN_CROP_SCALE, rng)


def _odd_int(v: float) -> bool:
    return v >= 1 and v == int(v) and int(v) % 2 == 1


# The paper's test-time perturbations (jpeg:Q is already in VIEWS: PIL's quality-Q re-encode, as the
# paper's torchvision JPEG does it).
PAPER_VIEWS: dict[str, tuple[Callable, Callable[[float], bool], str]] = {
    "shortside": (_shortside, lambda v: 1 <= v <= 16384 and v == int(v),
                  "shortest side in px, aspect kept, bilinear (paper: 128, 352, 576, 800, 1024)"),
    "blurk": (_blurk, lambda v: _odd_int(v) and v <= 255,
              "odd Gaussian kernel size, sigma 3 (paper: 3, 5, 9, 11, 15)"),
    "rcrop": (_rcrop, lambda v: 0 < v <= 1,
              "area fraction of a random crop resized to 224x224 (paper: 0.05 to 0.2)"),
}
# Views without a value: name -> (function, meaning).
NAMED_VIEWS: dict[str, tuple[Callable, str]] = {
    "paper-train-aug": (_paper_train_aug, "one of the paper's four training perturbations per image"),
}
_VALUED = {**VIEWS, **PAPER_VIEWS}


def _help() -> str:
    return "; ".join([f"{k}:<{v[2]}>" for k, v in _VALUED.items()] + [f"{k} <{v[1]}>" for k, v in NAMED_VIEWS.items()])


def view_rng(spec: str, key: str) -> np.random.Generator:
    """The random generator of view ``spec`` for the image at path ``key``: every random draw of a view
    comes from it, so an image gets the same draw in every run, whatever else is extracted with it."""
    return np.random.default_rng(int.from_bytes(seeded_key(spec, key), "little"))


@dataclass(frozen=True)
class View:
    """A parsed view spec; call it on (image, key) where key (the image's path) seeds random steps."""

    steps: tuple[tuple[str, float | None], ...] = ()  # (name, value); value None for NAMED_VIEWS

    @classmethod
    def parse(cls, spec: str | None) -> "View":
        if spec is None or spec.strip().lower() in ("", "none"):
            return cls()
        steps = []
        for part in spec.split("+"):
            name, sep, value = part.strip().partition(":")
            name = name.lower()
            if name in NAMED_VIEWS:
                if sep:
                    raise ViewError(f"--view {spec!r}: {name} takes no value; write just {name}")
                steps.append((name, None))
                continue
            if name not in _VALUED or not sep:
                raise ViewError(f"--view {spec!r}: {part!r} is not a view. Valid: none, or {_help()}, "
                                "joined with '+'")
            try:
                v = float(value) + 0.0  # + 0.0: -0 is 0, one view with one name
            except ValueError:
                raise ViewError(f"--view {spec!r}: {value!r} is not a number ({_VALUED[name][2]})") from None
            if not math.isfinite(v):  # float() accepts inf and nan; no view means anything with them
                raise ViewError(f"--view {spec!r}: {name} needs a finite number ({_VALUED[name][2]}), got {value}")
            if not _VALUED[name][1](v):
                raise ViewError(f"--view {spec!r}: {name} needs {_VALUED[name][2]}, got {value}")
            steps.append((name, v))
        return cls(tuple(steps))

    @property
    def spec(self) -> str:
        """Canonical spec: equal views have equal specs (``jpeg:75.0`` -> ``jpeg:75``), different views
        different ones (``blur:1.0000001`` is not ``blur:1``)."""
        if not self.steps:
            return "none"
        return "+".join(n if v is None else f"{n}:{_number(v)}" for n, v in self.steps)

    def __bool__(self) -> bool:
        return bool(self.steps)

    def __call__(self, img: Image.Image, key: str) -> Image.Image:
        if not self.steps:
            return img
        rng = view_rng(self.spec, key)
        for name, value in self.steps:
            img = (NAMED_VIEWS[name][0] if value is None else _VALUED[name][0])(img, value, rng)
        return img.convert("RGB") if img.mode != "RGB" else img
