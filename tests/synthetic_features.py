"""A real feature set on disk (HDF5 shards + manifest, written through attrib.store) with synthetic
features, so probe tests run in seconds without a model.

Sources are the demo's (so the demo's built-in splits apply). Each block separates the sources to a
different degree: block 0 barely, the last block clearly; concatenations are easy. A few rows are marked
as failed to decode, which splits must skip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attrib.data.catalog import ImageList
from attrib.data.demo import GENERATORS
from attrib.store import FeatureSet

SEPARATION = (0.15, 0.6, 2.5)


def make_feature_set(folder: Path, n_train: int = 30, n_val: int = 12, width: int = 12, seed: int = 0,
                     label: str = "", shard_size: int = 64) -> FeatureSet:
    sources = ("real",) + GENERATORS
    rows = [(f"{src}/{sub}/{i:03d}.png", src, sub) for src in sources
            for sub, n in (("train", n_train), ("val", n_val)) for i in range(n)]
    images = ImageList.from_rows(rows, root=str(folder / "images"))
    manifest = {"dataset": "demo", "dataset_kind": "demo", "family": "synthetic", "model": "synthetic",
                "weights": f"seed{seed}", "weights_sha256": "", "quick_gelu": False, "preprocess": {"size": 8},
                "view": "none", "n_blocks": len(SEPARATION), "width": width, "embed_dim": 4,
                "shard_size": shard_size, "precision": "fp32"}
    if label:
        manifest["label"] = label
    fs = FeatureSet.create(folder / "fs", manifest, images)
    rng = np.random.default_rng(seed)
    means = {s: rng.normal(size=(len(SEPARATION), width)) * np.array(SEPARATION)[:, None] for s in sources}
    feats = np.stack([means[s] + rng.normal(size=(len(SEPARATION), width)) for s in images.sources])
    ok = np.ones(len(images), bool)
    ok[[3, 50, 51]] = False  # failed decodes: recorded in the cache, never used by a split
    for k in range(fs.n_shards):
        a, b = fs.shard_range(k)
        fs.write_shard(k, feats[a:b], np.zeros((b - a, 4)), ok[a:b],
                       ["" if o else "broken image" for o in ok[a:b]])
    return FeatureSet.open(fs.path)


def copy_feature_set(fs: FeatureSet, folder: Path, rows=None, change=None, **manifest: object) -> FeatureSet:
    """A new feature set at ``folder`` holding ``rows`` of ``fs`` (all by default; their order follows the
    paths) with the same features, flags and errors, written through the store like any extraction.

    ``change(rows, cls)`` may return other features for those rows (cls: float32 (n, L, D)); ``manifest``
    fields replace ``fs``'s (another preprocess, view, model, dataset, ...).
    """
    rows = np.arange(fs.n_images) if rows is None else np.sort(np.asarray(rows, dtype=np.int64))
    images = fs.images.take(rows)
    cls = np.stack([fs.block(b, rows) for b in range(fs.n_blocks)], axis=1)
    if change is not None:
        cls = np.asarray(change(rows, cls), dtype=np.float32)
    embed = fs.embed(rows)
    ok_all, errors_all = fs.status()
    ok, errors = ok_all[rows], [errors_all[r] for r in rows]
    m = fs.manifest.to_json()
    for k in ("n_images", "images_sha256", "created"):
        m.pop(k, None)
    out = FeatureSet.create(folder, {**m, **manifest}, images)
    for k in range(out.n_shards):
        a, b = out.shard_range(k)
        out.write_shard(k, cls[a:b], embed[a:b], ok[a:b], errors[a:b])
    return FeatureSet.open(out.path)


# ------------------------------------------------------------------ a head and scores added at run time
# They stand for registry entries attrib does not ship (another developer's, a user's plugin): the study,
# the protocols and persistence must handle them through the registries alone. They are also cheap, so
# the tests that exercise study mechanics run fast.
from attrib.probe.heads import ProbeHead, softmax  # noqa: E402
from attrib.probe.scorers import OpenSetScorer  # noqa: E402


class CentroidHead(ProbeHead):
    """Nearest class mean; ``temperature`` scales the logits (changes probabilities, not predictions)."""

    path_param = "temperature"
    default_path = (0.25, 1.0, 4.0)

    def __init__(self, temperature: float = 1.0, note: str = "x"):
        self.temperature = temperature
        self.note = note

    def fit(self, X, y):
        X = np.asarray(X, dtype=np.float64)
        self.classes_ = np.unique(y)
        self.means_ = np.stack([X[y == c].mean(axis=0) for c in self.classes_])
        self.meta_ = {"n": int(len(y)), "dims": [int(X.shape[1])], "spread": float(X.std())}
        return self

    def decision_function(self, X):
        X = np.asarray(X, dtype=np.float64)
        d = ((X[:, None, :] - self.means_[None]) ** 2).sum(-1)
        return -self.temperature * d


class MaxLogitScore(OpenSetScorer):
    def __init__(self, head=None, shift: float = 0.0):
        self.head = head
        self.shift = shift

    def score_samples(self, X):
        return self.head.decision_function(X).max(axis=1) + self.shift


class CentroidDistance(OpenSetScorer):
    """Needs the centroid head's means (cannot use other heads), and learns its own statistic."""

    @classmethod
    def supports(cls, head) -> bool:
        return isinstance(head, CentroidHead)

    def fit(self, X, y=None):
        self.scale_ = np.float64(np.asarray(X).std() + 1.0)
        return self

    def score_samples(self, X):
        X = np.asarray(X, dtype=np.float64)
        return -((X[:, None, :] - self.head.means_[None]) ** 2).sum(-1).min(axis=1) / self.scale_


def register(monkeypatch) -> None:
    from attrib.probe.heads import HEADS
    from attrib.probe.scorers import SCORERS

    monkeypatch.setitem(HEADS, "centroid", CentroidHead)
    monkeypatch.setitem(SCORERS, "maxlogit_t", MaxLogitScore)
    monkeypatch.setitem(SCORERS, "centroid_dist", CentroidDistance)


def softmax_msp(head, X):
    return softmax(head.decision_function(X)).max(axis=1)
