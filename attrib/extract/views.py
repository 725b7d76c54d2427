"""Views: deterministic image perturbations applied before the model's own transform.

Why: GenImage's real images are JPEG and most generated ones PNG, a shortcut any classifier learns;
``jpeg:Q`` re-encodes everything so that only the generator's traces remain. The other views serve the
paper's robustness study. Each view gives its own feature set (the view is part of its identity), and
random views are seeded per image (from the image's path), so reruns and resumed runs are identical.

Spec grammar: ``none`` or ``name:value[+name:value...]``, applied left to right, e.g. ``jpeg:75`` or
``resize:0.5+jpeg:90``.
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


def _help() -> str:
    return "; ".join(f"{k}:<{v[2]}>" for k, v in VIEWS.items())


@dataclass(frozen=True)
class View:
    """A parsed view spec; call it on (image, key) where key (the image's path) seeds random steps."""

    steps: tuple[tuple[str, float], ...] = ()

    @classmethod
    def parse(cls, spec: str | None) -> "View":
        if spec is None or spec.strip().lower() in ("", "none"):
            return cls()
        steps = []
        for part in spec.split("+"):
            name, sep, value = part.strip().partition(":")
            name = name.lower()
            if name not in VIEWS or not sep:
                raise ViewError(f"--view {spec!r}: {part!r} is not a view. Valid: none, or {_help()}, "
                                "joined with '+'")
            try:
                v = float(value) + 0.0  # + 0.0: -0 is 0, one view with one name
            except ValueError:
                raise ViewError(f"--view {spec!r}: {value!r} is not a number ({VIEWS[name][2]})") from None
            if not math.isfinite(v):  # float() accepts inf and nan; no view means anything with them
                raise ViewError(f"--view {spec!r}: {name} needs a finite number ({VIEWS[name][2]}), got {value}")
            if not VIEWS[name][1](v):
                raise ViewError(f"--view {spec!r}: {name} needs {VIEWS[name][2]}, got {value}")
            steps.append((name, v))
        return cls(tuple(steps))

    @property
    def spec(self) -> str:
        """Canonical spec: equal views have equal specs (``jpeg:75.0`` -> ``jpeg:75``), different views
        different ones (``blur:1.0000001`` is not ``blur:1``)."""
        if not self.steps:
            return "none"
        return "+".join(f"{n}:{_number(v)}" for n, v in self.steps)

    def __bool__(self) -> bool:
        return bool(self.steps)

    def __call__(self, img: Image.Image, key: str) -> Image.Image:
        if not self.steps:
            return img
        seed = int.from_bytes(seeded_key(self.spec, key), "little")
        rng = np.random.default_rng(seed)
        for name, value in self.steps:
            img = VIEWS[name][0](img, value, rng)
        return img.convert("RGB") if img.mode != "RGB" else img
