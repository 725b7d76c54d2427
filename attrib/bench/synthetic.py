"""SYNTHETIC CLIP-like features for the probe benchmarks: there are no real CLIP features on a
development machine, and the speed of the probe depends on the shape of the data, so the benchmarks
draw features that have the shape that makes raw CLIP features hard for a solver.

Each block's features are Gaussian classes (one per source) with

- a steep power-law covariance spectrum (sd of the d-th direction ~ d^-0.4) in a random dense basis;
- class-specific anisotropic scales (classes are not simple shifted copies of each other);
- a few dimensions with huge offsets (tens, against a spread of ~0.1) and larger variance, like the
  outlier dimensions of CLIP's intermediate blocks, the reason raw features are badly conditioned;
- a class separation set per block, so a study can make it peak at mid-depth as CLIP's does.

:func:`genimage_like` writes a whole feature set in GenImage's layout through the real store (the
manifest's ``label`` says it is synthetic, and `attrib probe` prints it as a banner).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

SEPARATION_PEAK = 0.11       # class separation at the best block: ~97% closed-set accuracy with 4000/class
PEAK_BLOCK = 7               # 0-based, the paper's best block of ViT-B/16 (8 of 12 counting from 1)


@dataclass
class ClipLikeBlock:
    """The feature distribution of one block: ``n_sources`` Gaussian classes in ``dim`` dimensions."""

    basis: np.ndarray | tuple[np.ndarray, np.ndarray]  # (D, D) orthogonal, or a Kronecker pair (a, a), (b, b)
    sd: np.ndarray             # (D,) spread along the basis directions (power law)
    means: np.ndarray          # (S, D) source means (centre + separation)
    class_scales: np.ndarray   # (S, D) per-source anisotropic scale of the spread
    massive: np.ndarray        # (M,) indices of the huge-offset dimensions
    massive_sd: np.ndarray     # (M,) their extra spread

    @classmethod
    def draw(cls, n_sources: int, dim: int, separation: float, rng: np.random.Generator, n_massive: int = 4,
             kron: tuple[int, int] | None = None) -> "ClipLikeBlock":
        """A random block. ``kron=(a, b)`` with a * b = dim uses the Kronecker product of two random
        orthogonal matrices as the basis: just as dense, and 768 / (a + b) times cheaper to apply (what
        makes million-row sets affordable); None draws a full random orthogonal matrix."""
        if kron is None:
            basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
        else:
            a, b = kron
            if a * b != dim:
                raise ValueError(f"kron={kron}: {a} x {b} != dim {dim}")
            basis = (np.linalg.qr(rng.standard_normal((a, a)))[0], np.linalg.qr(rng.standard_normal((b, b)))[0])
        sd = np.sqrt(0.6 / 20 * (np.arange(1, dim + 1) / dim) ** -0.8)      # power-law spectrum
        centre = rng.standard_normal(dim) * 0.3
        massive = rng.choice(dim, n_massive, replace=False)
        centre[massive] = rng.choice([-1, 1], n_massive) * rng.uniform(15, 60, n_massive)
        massive_sd = rng.uniform(2, 6, n_massive)
        means = centre + separation * sd.mean() * rng.standard_normal((n_sources, dim))
        class_scales = np.exp(0.25 * rng.standard_normal((n_sources, dim)))
        return cls(basis, sd, means, class_scales, massive, massive_sd)

    def rotate(self, Z: np.ndarray) -> np.ndarray:
        """Rows expressed in the basis directions -> feature axes."""
        if isinstance(self.basis, np.ndarray):
            return Z @ self.basis.T
        a, b = self.basis
        n = len(Z)
        Z = Z.reshape(n, len(a), len(b))
        return np.matmul(np.matmul(a, Z), b.T).reshape(n, -1)

    def sample(self, source: int, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` float32 rows of source ``source``."""
        x = self.means[source] + self.rotate(rng.standard_normal((n, len(self.sd))) * self.sd
                                             * self.class_scales[source])
        x[:, self.massive] += rng.standard_normal((n, len(self.massive))) * self.massive_sd
        return x.astype(np.float32)


def separation_profile(n_blocks: int, peak: float = SEPARATION_PEAK, peak_block: int = PEAK_BLOCK) -> np.ndarray:
    """Class separation per block: low in early blocks, highest at ``peak_block``, lower again at the end
    (CLIP's intermediate blocks separate generators better than its last ones)."""
    blocks = np.arange(n_blocks)
    return peak * (0.5 + 0.5 * np.exp(-0.5 * ((blocks - peak_block) / 2.5) ** 2))


# ------------------------------------------------------------------------------- GenImage-shaped sets
def genimage_rows(train_dir: dict[str, int], val_dir: dict[str, int]) -> list[tuple[str, str, str]]:
    """(path, source, subset) rows in GenImage's layout: ``<generator>/{train,val}/{ai,nature}/...``.

    ``train_dir[source]`` / ``val_dir[source]`` images per source in ``train/`` and ``val/``; ``real``
    images are spread over the generators' ``nature`` folders (as in GenImage, where every generator's
    archive brings its own ImageNet photos), each with a distinct file name.
    """
    from attrib.data.catalog import REAL
    from attrib.data.genimage import GENERATORS

    rows = []
    for subset, counts in (("train", train_dir), ("val", val_dir)):
        for gen in GENERATORS:
            rows += [(f"{gen}/{subset}/ai/{i:07d}_{gen.lower()}.png", gen, subset) for i in range(counts.get(gen, 0))]
        n_real = counts.get(REAL, 0)
        for g, gen in enumerate(GENERATORS):
            rows += [(f"{gen}/{subset}/nature/n{i:08d}.JPEG", REAL, subset)
                     for i in range(g, n_real, len(GENERATORS))]
    return rows


def genimage_like(cache: Path, train_dir: dict[str, int], val_dir: dict[str, int], n_blocks: int = 12,
                  dim: int = 768, seed: int = 0, peak: float = SEPARATION_PEAK, peak_block: int = PEAK_BLOCK,
                  shard_size: int = 16384, log: Callable[[str], None] = print):
    """The synthetic GenImage-shaped feature set for these parameters, built under ``cache`` once and
    reused (its folder name holds a hash of the parameters; an unfinished one is completed)."""
    from attrib.data.catalog import REAL, ImageList
    from attrib.data.genimage import GENERATORS
    from attrib.store import FeatureSet

    params = {"train_dir": train_dir, "val_dir": val_dir, "n_blocks": n_blocks, "dim": dim, "seed": seed,
              "peak": peak, "shard_size": shard_size, "generator": "ClipLikeBlock/kron/v2"}
    if peak_block != PEAK_BLOCK:
        params["peak_block"] = peak_block
    tag = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    images = ImageList.from_rows(genimage_rows(train_dir, val_dir), root="/nonexistent/synthetic-genimage")
    manifest = {"dataset": "genimage", "dataset_kind": "genimage", "family": "synthetic",
                "model": "synthetic-clip-like", "weights": f"seed{seed}", "weights_sha256": "", "quick_gelu": False,
                "preprocess": {"size": 224}, "view": "none", "n_blocks": n_blocks, "width": dim, "embed_dim": 4,
                "shard_size": shard_size, "precision": "fp32", "bench": params,
                "label": "SYNTHETIC CLIP-like features (benchmark data, not CLIP)"}
    fs = FeatureSet.create(Path(cache) / f"genimage-synthetic-{tag}", manifest, images)
    todo = fs.shards_todo()
    if not todo:
        return fs
    sources = (REAL,) + GENERATORS
    kron = _kron_factors(dim)
    rng = np.random.default_rng(seed)
    blocks = [ClipLikeBlock.draw(len(sources), dim, s, rng, kron=kron)
              for s in separation_profile(n_blocks, peak, peak_block)]
    src_index = np.array([sources.index(s) for s in images.sources])
    log(f"building {fs.path} ({len(images):,} images x {n_blocks} blocks x {dim}, {len(todo)} shards)")
    for k in todo:
        a, b = fs.shard_range(k)
        cls = np.empty((b - a, n_blocks, dim), dtype=np.float32)
        srng = np.random.default_rng([seed, k])
        for s in np.unique(src_index[a:b]):
            pos = np.flatnonzero(src_index[a:b] == s)
            for layer, block in enumerate(blocks):
                cls[pos, layer] = block.sample(int(s), len(pos), srng)
        fs.write_shard(k, cls, np.zeros((b - a, 4), np.float32), np.ones(b - a, bool), [""] * (b - a))
    return FeatureSet.open(fs.path)


def _kron_factors(dim: int) -> tuple[int, int] | None:
    """The most balanced a x b = dim (a <= b), or None for a prime."""
    a = int(np.sqrt(dim))
    while a > 1 and dim % a:
        a -= 1
    return (a, dim // a) if a > 1 else None
