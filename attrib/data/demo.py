"""The embedded demo dataset: a small GenImage-shaped benchmark built locally, offline, by seed.

Why it exists: a user must be able to run the whole pipeline in minutes without downloading GenImage.
Each synthetic "generator" is a different image-synthesis family implemented here, so each leaves its own
low-level traces (upsampling checkerboards, spectral slopes, palettes, ...), which is exactly what origin
attribution keys on. Real images are crops of the photographs that ship inside scikit-learn and matplotlib.

Layout written (GenImage's, so the GenImage reader lists it)::

    <root>/<generator>/{train,val}/ai/*.png       synthetic images of that generator
    <root>/<generator>/{train,val}/nature/*.jpg   real crops, spread over the generator folders
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from attrib.data.catalog import CatalogError

DEMO_VERSION = 1
SIZE = 128
GENERATORS = ("deconv", "upconv", "spectral", "perlin", "autoencoder", "palette", "fractal")

# Demo open-set splits, in the shape of GenImage's: known = real + 4 generators, unknown = the other 3.
SPLITS: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {
    1: (("deconv", "spectral", "perlin", "palette"), ("upconv", "autoencoder", "fractal")),
    2: (("upconv", "autoencoder", "fractal", "spectral"), ("deconv", "perlin", "palette")),
    3: (("deconv", "autoencoder", "perlin", "fractal"), ("upconv", "spectral", "palette")),
}
_STAMP = ".attrib-demo.json"


# ---------------------------------------------------------------------------------------- real photos
def _photos() -> list[np.ndarray]:
    import matplotlib
    import sklearn.datasets

    sk = Path(sklearn.datasets.__file__).parent / "images"
    mpl = Path(matplotlib.get_data_path()) / "sample_data"
    files = [sk / "china.jpg", sk / "flower.jpg", mpl / "grace_hopper.jpg"]
    return [np.asarray(Image.open(f).convert("RGB")) for f in files]


def _real_crop(rng: np.random.Generator, photos: list[np.ndarray]) -> np.ndarray:
    img = photos[rng.integers(len(photos))]
    h, w = img.shape[:2]
    side = int(rng.integers(SIZE * 3 // 4, min(h, w)))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(img[y:y + side, x:x + side]).resize((SIZE, SIZE), Image.BICUBIC)
    out = np.asarray(crop)
    return out[:, ::-1] if rng.random() < 0.5 else out


# --------------------------------------------------------------------------------- synthetic families
def _to_image(x: np.ndarray) -> np.ndarray:
    """Per-image min-max stretch to uint8 (H, W, 3)."""
    x = x - x.min()
    return (255 * x / max(float(x.max()), 1e-8)).astype(np.uint8)


class _Decoder:
    """A random-weight convolutional decoder, fixed per generator like a trained network would be."""

    def __init__(self, seed: int, transposed: bool):
        import torch

        g = torch.Generator().manual_seed(seed)
        chans = [64, 48, 32, 24, 16, 3]
        self.weights = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            shape = (cin, cout, 4, 4) if transposed else (cout, cin, 3, 3)
            fan = cin * (16 if transposed else 9)
            self.weights.append(torch.randn(shape, generator=g) * (2.0 / fan) ** 0.5)
        self.transposed = transposed

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(rng.standard_normal((1, 64, SIZE // 32, SIZE // 32)).astype(np.float32))
        for i, w in enumerate(self.weights):
            if self.transposed:  # stride-2 transposed conv: the classic checkerboard trace
                x = F.conv_transpose2d(x, w, stride=2, padding=1)
            else:  # upsample-then-convolve: smooth, no checkerboard, but blurrier spectra
                x = F.conv2d(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False), w, padding=1)
            x = torch.tanh(x) if i == len(self.weights) - 1 else F.leaky_relu(x, 0.2)
        return _to_image(x[0].permute(1, 2, 0).numpy())


def _spectral(rng: np.random.Generator) -> np.ndarray:
    """Colour noise with a 1/f^alpha power spectrum, the statistics of natural images without content."""
    fy = np.fft.fftfreq(SIZE)[:, None]
    fx = np.fft.rfftfreq(SIZE)[None, :]
    f = np.sqrt(fx ** 2 + fy ** 2)
    f[0, 0] = 1.0
    alpha = rng.uniform(1.2, 2.2)
    chans = []
    for _ in range(3):
        spec = (rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape)) / f ** alpha
        chans.append(np.fft.irfft2(spec, s=(SIZE, SIZE)))
    mix = rng.uniform(0.2, 1.0, size=(3, 3))
    return _to_image(np.stack(chans, -1) @ mix)


def _perlin_octave(rng: np.random.Generator, cells: int) -> np.ndarray:
    """One octave of gradient (Perlin) noise on a cells x cells lattice."""
    angles = rng.uniform(0, 2 * np.pi, (cells + 1, cells + 1))
    grads = np.stack([np.cos(angles), np.sin(angles)], -1)
    t = np.linspace(0, cells, SIZE, endpoint=False)
    yi, xi = np.meshgrid(t, t, indexing="ij")
    y0, x0 = yi.astype(int), xi.astype(int)
    yf, xf = yi - y0, xi - x0

    def dot(dy, dx):
        g = grads[y0 + dy, x0 + dx]
        return g[..., 0] * (yf - dy) + g[..., 1] * (xf - dx)

    fade = lambda u: u * u * u * (u * (u * 6 - 15) + 10)  # noqa: E731
    u, v = fade(xf), fade(yf)
    top = dot(0, 0) * (1 - u) + dot(0, 1) * u
    bottom = dot(1, 0) * (1 - u) + dot(1, 1) * u
    return top * (1 - v) + bottom * v


def _perlin(rng: np.random.Generator) -> np.ndarray:
    """Fractal Perlin noise (several octaves) mapped through a random colour ramp."""
    base = int(rng.integers(2, 5))
    field = sum(_perlin_octave(rng, base * 2 ** o) / 2 ** o for o in range(4))
    field = (field - field.min()) / max(np.ptp(field), 1e-8)
    ramp = rng.uniform(0, 1, (4, 3))
    pos = np.linspace(0, 1, 4)
    rgb = np.stack([np.interp(field, pos, ramp[:, c]) for c in range(3)], -1)
    return _to_image(rgb)


class _AutoEncoder:
    """Re-synthesis of real photos through a random convolutional autoencoder.

    The encoder pools 4x and mixes channels; the decoder upsamples with transposed convolutions whose
    kernels are bilinear plus fixed random perturbations: the content stays a real photo, the pixels
    carry a decoder's fingerprint (like a VAE round trip in latent diffusion).
    """

    def __init__(self, seed: int, photos: list[np.ndarray]):
        import torch

        g = torch.Generator().manual_seed(seed)
        self.photos = photos
        self.enc = torch.eye(3).view(3, 3, 1, 1) + 0.2 * torch.randn(3, 3, 1, 1, generator=g)
        bil = torch.tensor([0.25, 0.75, 0.75, 0.25])
        k = (bil[:, None] * bil[None, :]).expand(3, 3, 4, 4) * torch.eye(3).view(3, 3, 1, 1)
        self.dec = [k + 0.08 * torch.randn(3, 3, 4, 4, generator=g) for _ in range(2)]

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(_real_crop(rng, self.photos).astype(np.float32) / 255).permute(2, 0, 1)[None]
        z = F.conv2d(F.avg_pool2d(x, 4), self.enc)
        for w in self.dec:
            z = F.conv_transpose2d(z, w, stride=2, padding=1)
        return (z[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)


def _palette(rng: np.random.Generator) -> np.ndarray:
    """Flat-shaded random shapes rendered with a small palette: hard edges, few colours."""
    colours = [tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(int(rng.integers(4, 9)))]
    img = Image.new("RGB", (SIZE, SIZE), colours[0])
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(6, 16))):
        x0, y0 = rng.integers(-20, SIZE, 2)
        w, h = rng.integers(10, SIZE // 2, 2)
        box = [int(x0), int(y0), int(x0 + w), int(y0 + h)]
        fill = colours[int(rng.integers(len(colours)))]
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse(box, fill=fill)
        elif kind == 1:
            draw.rectangle(box, fill=fill)
        else:
            pts = [tuple(int(v) for v in rng.integers(0, SIZE, 2)) for _ in range(3)]
            draw.polygon(pts, fill=fill)
    return np.asarray(img.quantize(colors=len(colours), dither=Image.Dither.FLOYDSTEINBERG).convert("RGB"))


def _fractal(rng: np.random.Generator) -> np.ndarray:
    """A Julia set with a random constant, smooth escape-time colouring."""
    c = complex(*rng.uniform([-0.85, -0.3], [0.4, 0.8]))
    zoom = rng.uniform(1.0, 1.8)
    cx, cy = rng.uniform(-0.3, 0.3, 2)
    t = np.linspace(-1.5, 1.5, SIZE) / zoom
    z = (t[None, :] + cx) + 1j * (t[:, None] + cy)
    count = np.zeros(z.shape)
    alive = np.ones(z.shape, bool)
    for i in range(48):
        z[alive] = z[alive] ** 2 + c
        escaped = alive & (np.abs(z) > 2)
        count[escaped] = i + 1 - np.log2(np.log(np.abs(z[escaped]) + 1e-9) + 1e-9)
        alive &= ~escaped
    phase = rng.uniform(0, 2 * np.pi, 3)
    rgb = 0.5 + 0.5 * np.cos(0.25 * count[..., None] + phase)
    return _to_image(rgb)


# ------------------------------------------------------------------------------------------- builder
def _families(seed: int, photos: list[np.ndarray]) -> dict[str, Callable[[np.random.Generator], np.ndarray]]:
    return {
        "deconv": _Decoder(seed + 1, transposed=True),
        "upconv": _Decoder(seed + 2, transposed=False),
        "spectral": _spectral,
        "perlin": _perlin,
        "autoencoder": _AutoEncoder(seed + 3, photos),
        "palette": _palette,
        "fractal": _fractal,
    }


def is_demo(root: str | os.PathLike) -> bool:
    """True when ``root`` holds a finished demo build (of any size)."""
    return (Path(root) / _STAMP).is_file()


def build_demo(root: str | os.PathLike, per_class: int = 160, val_fraction: float = 0.25,
               seed: int = 0, progress: bool = False) -> Path:
    """Write the demo dataset under ``root`` (skipped when an identical one is already there).

    ``per_class`` images per generator and as many real crops in total; ``val_fraction`` of each goes to
    ``val/``. Identical arguments give byte-identical files.
    """
    from tqdm import tqdm

    root = Path(root)
    params = {"version": DEMO_VERSION, "per_class": per_class, "val_fraction": val_fraction,
              "seed": seed, "size": SIZE}
    stamp = root / _STAMP
    if stamp.exists():
        try:
            if json.loads(stamp.read_text()) == params:
                return root
        except (OSError, ValueError):
            pass
    if root.exists():
        if any(p.name not in GENERATORS and p.name != _STAMP for p in root.iterdir()):
            raise CatalogError(f"{root} exists and is not an attrib demo folder; choose another --root")
        shutil.rmtree(root)
    tmp = root.with_name(root.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)

    photos = _photos()
    families = _families(seed, photos)
    n_val = max(1, int(round(per_class * val_fraction)))
    bar = tqdm(total=per_class * (len(GENERATORS) + 1), desc="building demo dataset", unit=" img",
               disable=not progress)
    for g, (name, make) in enumerate(families.items()):
        rng = np.random.default_rng([seed, g])
        for i in range(per_class):
            subset = "val" if i < n_val else "train"
            out = tmp / name / subset / "ai" / f"{name}_{i:04d}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(make(rng)).save(out, optimize=False)
            bar.update()
    rng = np.random.default_rng([seed, 99])
    for i in range(per_class):  # real crops, dealt round-robin into the generator folders' nature/
        subset = "val" if i < n_val else "train"
        gen = GENERATORS[i % len(GENERATORS)]
        out = tmp / gen / subset / "nature" / f"real_{i:04d}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_real_crop(rng, photos)).save(out, quality=int(rng.integers(85, 96)))
        bar.update()
    bar.close()
    (tmp / _STAMP).write_text(json.dumps(params))
    tmp.rename(root)
    return root
