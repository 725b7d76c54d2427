"""The report's figures drawn from result lines alone: metrics by block, metrics by shots, the
confusion of the best method, and its per-unknown-generator bars.

Why apart from :mod:`attrib.probe.curves`: these need only ``results.jsonl`` (aggregated by
:mod:`attrib.probe.tables`), so every study gets them; curves need saved per-sample scores.
Conventions (:mod:`attrib.probe.plotkit`): blocks counted from 1, red titles for random-init features,
one panel per split in a grid.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from attrib.probe import plotkit
from attrib.probe.plotkit import block_label, method_title
from attrib.probe.tables import METRICS, NAMES, layer_sort, shots_sort

Point = tuple[float, dict]


def params_suffix(r: dict) -> str:
    """A method's ``--param`` settings, as legends name them ('' for the defaults)."""
    return f" [{r['params']}]" if r.get("params") else ""


def _series_segments(pts: list[Point], gap: float | None) -> list[list[Point]]:
    """A series cut where it crosses ``gap``: points past it (concatenated blocks) are not joined by a
    line to the single blocks before them."""
    pts = sorted(pts, key=lambda p: p[0])
    if gap is None:
        return [pts]
    return [seg for seg in ([p for p in pts if p[0] < gap], [p for p in pts if p[0] > gap]) if seg]


def _plot_lines(path: Path, series: dict[str, list[Point]], xlabel: str, xticks: dict[float, str],
                labels: list[str], title: str, gap: float | None = None) -> Path:
    """Seven metric panels (mean ± std), one line per series, the legend below the panels."""
    plt = plotkit.pyplot()
    fig, axes = plt.subplots(2, 4, figsize=(17, 7.5))
    axes = axes.ravel()
    axes[-1].axis("off")
    plotkit.title(fig, title, labels)
    rotate = max(map(len, xticks.values()), default=0) > 3
    for ax, m in zip(axes, METRICS):
        for name, pts in series.items():
            color = None
            for i, seg in enumerate(_series_segments(pts, gap)):
                y = np.array([p[1][m] for p in seg])
                e = np.array([p[1][m + "_std"] for p in seg])
                line = ax.errorbar([p[0] for p in seg], y, yerr=e, marker="o", ms=3, capsize=2, color=color,
                                   label=name if i == 0 else None, ls="-" if i == 0 else "none")
                color = line[0].get_color()
        if gap is not None:
            ax.axvline(gap, color="grey", ls=":", lw=1)
        ax.set_title(NAMES[m])
        ax.set_xlabel(xlabel)
        ax.set_ylabel("%")
        ax.grid(alpha=0.3)
        # every position named: a locator shows fractional ticks around a single block
        ax.set_xticks(list(xticks), list(xticks.values()), rotation=45 if rotate else 0,
                      ha="right" if rotate else "center", fontsize=8)
    handles, names = axes[0].get_legend_handles_labels()
    # Below the panels, as many columns as fit the figure's width: inside a panel, a study with many
    # methods overflowed onto the others. The saved image grows downwards to hold it (bbox_inches).
    col_inches = 0.06 * max(map(len, names), default=1) + 0.5  # 7-pt text plus the marker and spacing
    ncol = max(1, min(len(names), int(fig.get_figwidth() // col_inches)))
    fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, fontsize=7,
               frameon=False)
    # fixed margins: tight_layout draws the figure twice and doubles the time a report takes
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.1 if rotate else 0.08, top=0.88, wspace=0.25,
                        hspace=0.45 if rotate else 0.4)
    return plotkit.save(fig, path, [NAMES[m] for m in METRICS], dpi=100, bbox_inches="tight")


def plot_by_layer(rows: list[dict], path: Path, labels: list[str]) -> Path | None:
    """Each metric against the block, counted from 1; concatenated blocks after the single ones, past
    a dotted line, named by their blocks (e.g. 10+11+12)."""
    layers = sorted({r["layer"] for r in rows}, key=layer_sort)
    single = [la for la in layers if not la.startswith("concat")]
    last = max((int(la) + 1 for la in single), default=0)
    pos = {la: float(int(la) + 1) for la in single}
    pos.update({la: float(last + 1 + i) for i, la in enumerate(la for la in layers if la.startswith("concat"))})
    series: dict[str, list] = defaultdict(list)
    for r in rows:
        series[f"{r['head']}+{r['score']} shots={r['shots']} {r['protocol']}{params_suffix(r)}"].append(
            (pos[r["layer"]], r))
    gap = last + 0.5 if single and len(pos) > len(single) else None
    return _plot_lines(path, series, "block (counted from 1, as in the paper's figures)",
                       {pos[la]: block_label(la, short=True) for la in layers}, labels,
                       "metrics by block (mean ± std over splits and seeds)", gap)


def plot_by_shots(rows: list[dict], path: Path, labels: list[str]) -> Path | None:
    shots = sorted({r["shots"] for r in rows}, key=shots_sort)
    if len(shots) < 2:
        return None
    pos = {s: i for i, s in enumerate(shots)}
    series: dict[str, list] = defaultdict(list)
    for r in rows:
        series[f"{block_label(r['layer'])} {r['head']}+{r['score']} {r['protocol']}{params_suffix(r)}"].append(
            (pos[r["shots"]], r))
    return _plot_lines(path, series, "training images per class", {i: s for s, i in pos.items()}, labels,
                       "metrics by shots (mean ± std over splits and seeds)")


def split_order(names: Any) -> list[str]:
    """Split names in their natural order (2 before 10)."""
    return sorted({str(s) for s in names}, key=lambda s: (len(s), s))


def _confusion_matrix(rs: list[dict]) -> tuple[np.ndarray, list[str], list[str]]:
    """Counts summed over the runs of one split: known classes, then each unknown generator's row."""
    classes = rs[0]["classes"]
    cm = np.sum([np.array(r["confusion"], dtype=float) for r in rs], axis=0)
    unknown = list(rs[0].get("unknown_confusion") or {})
    um = np.array([np.sum([r["unknown_confusion"][g] for r in rs], axis=0) for g in unknown], dtype=float)
    return (np.vstack([cm, um]) if unknown else cm), list(classes), unknown


def plot_confusion(row: dict, path: Path, labels: list[str]) -> Path | None:
    """Row-normalised confusion of one method, one panel per split (summed over seeds) in a grid:
    known classes on top, then each unknown generator (which known class it was taken for)."""
    by_split: dict[str, list[dict]] = defaultdict(list)
    for r in row["_runs"]:
        if r.get("confusion"):
            by_split[str(r["split"])].append(r)
    if not by_split:
        return None
    plt = plotkit.pyplot()
    splits = split_order(by_split)
    mats = {s: _confusion_matrix(by_split[s]) for s in splits}
    names = max(len(n) for _, classes, unknown in mats.values() for n in classes + unknown)
    # cells of ~0.45 in. hold their 8-pt numbers; room left for the row names and the rotated column names
    width = 0.45 * max(m.shape[1] for m, _, _ in mats.values()) + 0.075 * (names + 10) + 0.5
    height = 0.45 * max(m.shape[0] for m, _, _ in mats.values()) + 0.05 * names + 1.2
    fig, axes = plotkit.panel_grid(plt, len(splits), panel=(width, height), max_cols=3)
    titles = []
    for ax, s in zip(axes, splits):
        rs = by_split[s]
        mat, classes, unknown = mats[s]
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = mat / mat.sum(axis=1, keepdims=True)
        ax.imshow(np.nan_to_num(frac), vmin=0, vmax=1, cmap="Blues")
        for (i, j), v in np.ndenumerate(frac):
            if not np.isnan(v):
                ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=8,
                        color="white" if v > 0.6 else "black")
        if unknown:
            ax.axhline(len(classes) - 0.5, color="red", lw=1.5)
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(mat)), classes + [f"{g} (unknown)" for g in unknown], fontsize=8)
        ax.set_xlabel("predicted (known classes)", fontsize=9)
        titles.append(f"split {s} ({len(rs)} seed{'s' if len(rs) > 1 else ''})")
        ax.set_title(titles[-1], fontsize=10)
    plotkit.title(fig, f"confusion, % of each row: {method_title(row)}", labels, fontsize=11)
    fig.tight_layout()
    return plotkit.save(fig, path, titles, dpi=100)


def plot_per_unknown(unknown_rows: list[dict[str, Any]], method: dict[str, Any], path: Path,
                     labels: list[str]) -> Path | None:
    """One bar per unknown generator of ``method``: its AUROC against the known test images (mean ±
    std over the splits and seeds where it was unknown), and the known class it is most mistaken for."""
    if not unknown_rows:
        return None
    plt = plotkit.pyplot()
    gens = sorted(unknown_rows, key=lambda u: u["generator"].lower())
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(gens) + 1.6))
    y = np.arange(len(gens))[::-1]
    vals = np.array([u["auroc"] for u in gens], dtype=float)
    errs = np.nan_to_num(np.array([u["auroc_std"] for u in gens], dtype=float))
    ax.barh(y, np.nan_to_num(vals), xerr=errs, color="tab:blue", alpha=0.8, capsize=3)
    for yi, u, v in zip(y, gens, vals):
        known = f"mistaken for {u['mistaken_for']} ({u['fraction']:.0f}%)" if u["mistaken_for"] != "-" else ""
        ax.text(1, yi, f"{'n/a' if np.isnan(v) else f'{v:.1f}'}  {known}", va="center", ha="left", fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.75, "lw": 0, "pad": 1})
    ax.axvline(50, color="grey", ls=":", lw=1)
    ax.set_yticks(y, [f"{u['generator']} ({u['runs']} run{'s' if u['runs'] > 1 else ''})" for u in gens], fontsize=9)
    ax.set_xlim(0, 100)
    ax.set_xlabel("AUROC of the known test images against this generator's (%); 50 = chance")
    plotkit.title(fig, f"unknown generators: {method_title(method)}", labels, fontsize=10)
    fig.tight_layout()
    return plotkit.save(fig, path, ["AUROC per unknown generator"], dpi=100)
