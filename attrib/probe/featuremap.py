"""Feature maps: a 2-D t-SNE of test features, one panel per block, coloured by source.

Why: this is the figure that shows why an intermediate block works — where the generators fall apart
as clusters and where an unknown generator lands among (or away from) the known ones. The images are a
seeded sample of one split's test images (known classes and unknown generators), taken from the
study's saved scores (which name them by path), and their features are read from the feature set the
result lines name, so the map shows exactly the images the table was measured on.

The feature set is opened only here (HDF5 is read by :mod:`attrib.store` when a block is read);
scikit-learn's t-SNE runs on at most 50 principal components, seeded, so a report is reproducible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from attrib.probe import plotkit
from attrib.probe.options import parse_layer_name
from attrib.probe.plotkit import block_label
from attrib.probe.report_inputs import RunScores

DEFAULT_PER_SOURCE = 100
PCA_DIMS = 50
MIN_POINTS = 6


def sample_sources(sc: RunScores, per_source: int, seed: int = 0) -> tuple[list[str], list[str], list[bool]]:
    """(paths, source of each, whether it is an unknown generator): at most ``per_source`` test images
    of each known class and unknown generator, drawn with ``seed`` (the same for every block)."""
    known_src = np.array(sc.classes, dtype=object)[sc.y_true] if sc.y_true.size else np.zeros(0, dtype=object)
    groups = [(c, sc.paths_known[known_src == c], False) for c in sc.classes]
    groups += [(g, sc.paths_unknown[sc.unknown_source == g], True) for g in sc.unknown_generators]
    rng = np.random.default_rng(seed)
    paths, sources, unknown = [], [], []
    for name, ps, is_unknown in groups:
        take = np.sort(rng.choice(len(ps), size=min(per_source, len(ps)), replace=False)) if len(ps) else []
        paths += [str(ps[i]) for i in take]
        sources += [name] * len(take)
        unknown += [is_unknown] * len(take)
    return paths, sources, unknown


def read_features(fs: Any, paths: Sequence[str], layer: str) -> np.ndarray:
    """Features of ``paths`` at ``layer`` (blocks concatenated for ``concat:``) from ``fs`` (a feature
    set or a union of several). A path it does not list is a KeyError naming it."""
    rows = fs.rows(paths)
    return np.concatenate([fs.block(b, rows) for b in parse_layer_name(layer)], axis=1)


def embed_2d(X: np.ndarray, seed: int = 0) -> np.ndarray:
    """A seeded t-SNE of ``X`` (after PCA to at most :data:`PCA_DIMS` dimensions)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    X = np.asarray(X, dtype=np.float64)
    X = (X - X.mean(axis=0)) / (X.std(axis=0) + 1e-8)
    if X.shape[1] > PCA_DIMS and len(X) > PCA_DIMS:
        X = PCA(PCA_DIMS, random_state=seed).fit_transform(X)
    perplexity = float(min(30.0, (len(X) - 1) / 3))
    return TSNE(2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed).fit_transform(X)


def plot_feature_maps(sc: RunScores, layers: Sequence[str], fs: Any, path: Path, labels: list[str],
                      per_source: int = DEFAULT_PER_SOURCE, seed: int = 0) -> tuple[Path | None, str]:
    """One t-SNE panel per layer of ``layers`` for the test images of ``sc``'s split; (path, note)."""
    paths, sources, unknown = sample_sources(sc, per_source, seed)
    if len(paths) < MIN_POINTS:
        return None, f"feature map skipped: split {sc.split} has {len(paths)} test images (at least {MIN_POINTS})"
    try:
        feats = {la: read_features(fs, paths, la) for la in layers}
    except KeyError as exc:
        return None, f"feature map skipped: the test images are not all in {fs.id}: {exc.args[0]}"
    plt = plotkit.pyplot()
    fig, axes = plotkit.panel_grid(plt, len(layers), panel=(3.8, 3.6), max_cols=4)
    names = list(dict.fromkeys(sources))
    colors = plt.get_cmap("tab20" if len(names) > 10 else "tab10").colors
    src, unk = np.array(sources), np.array(unknown)
    titles = []
    for ax, la in zip(axes, layers):
        xy = embed_2d(feats[la], seed)
        for i, name in enumerate(names):
            m = src == name
            is_unknown = bool(unk[m][0])
            ax.scatter(xy[m, 0], xy[m, 1], s=14 if is_unknown else 9, marker="x" if is_unknown else "o",
                       color=colors[i % len(colors)], alpha=0.85, lw=1.1 if is_unknown else 0,
                       label=f"{name} (unknown)" if is_unknown else name)
        ax.set_xticks([])
        ax.set_yticks([])
        titles.append(block_label(la))
        ax.set_title(titles[-1], fontsize=10)
    n_max = max(sources.count(n) for n in names)
    fewer = f", {n_max} at most here" if n_max < per_source else ""
    plotkit.title(fig, f"t-SNE of test features, split {sc.split}: up to {per_source} images per source{fewer} "
                  f"(seed {seed}); x = unknown generator", labels, fontsize=11)
    fig.tight_layout()
    handles, legend_names = axes[0].get_legend_handles_labels()
    # below the panels; the saved image grows to hold it (bbox_inches)
    ncol = len(names) if len(names) <= 9 else -(-len(names) // 2)  # one row (two for many sources)
    fig.legend(handles, legend_names, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol,
               fontsize=9, frameon=False, markerscale=1.6)
    return plotkit.save(fig, path, titles, dpi=100, bbox_inches="tight"), ""
