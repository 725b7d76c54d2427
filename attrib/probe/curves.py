"""The report's figures drawn from saved per-sample scores: ROC and OSCR curves, and the distribution
of the open-set score for the known test images and for each unknown generator.

Why: a table gives one number per method; these show where it comes from. The ROC curve (known =
positive) and the OSCR curve (correct-classification rate of known images against the rate of unknown
images accepted) are the curves whose areas are the table's AUROC and OSCR, computed here by the same
functions (:mod:`attrib.probe.metrics`). The operating point at 95% TPR (``fpr95``) is marked on both,
and a saved head's threshold on the score distributions. One panel per split, in a grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from attrib.probe import plotkit
from attrib.probe.metrics import (auroc, oscr, oscr_curve, rates_at_threshold, roc_curve, threshold_at_tpr)
from attrib.probe.plotkit import method_title
from attrib.probe.plots import split_order
from attrib.probe.report_inputs import HeadThreshold, RunScores

MAX_BINS = 60


def _panel_title(sc: RunScores) -> str:
    return f"split {sc.split} (seed {sc.line['seed']})"


def _curve_figure(scores: Mapping[str, RunScores], method: dict[str, Any], path: Path, labels: list[str],
                  tpr: float, kind: str) -> Path | None:
    """ROC (``kind="roc"``) or OSCR (``"oscr"``) curves, one panel per split."""
    if not scores:
        return None
    plt = plotkit.pyplot()
    splits = split_order(scores)
    fig, axes = plotkit.panel_grid(plt, len(splits), panel=(4.2, 4.0), max_cols=3)
    titles = []
    for ax, s in zip(axes, splits):
        sc = scores[s]
        if kind == "roc":
            x, y, _ = roc_curve(sc.s_known, sc.s_unknown)
            area, name, ylabel = auroc(sc.s_known, sc.s_unknown), "AUROC", "TPR (known images accepted)"
        else:
            x, y, _ = oscr_curve(sc.s_known, sc.correct, sc.s_unknown)
            area, name, ylabel = oscr(sc.s_known, sc.correct, sc.s_unknown), "OSCR", \
                "CCR (known accepted and correctly classified)"
        ax.plot(x, y, drawstyle="default", lw=1.6, label=f"{name} {100 * area:.2f}")
        ax.plot([0, 1], [0, 1] if kind == "roc" else [0, float(np.mean(sc.correct)) if sc.correct.size else 0],
                color="grey", ls=":", lw=1, label="chance")
        if sc.s_known.size and sc.s_unknown.size:
            t = threshold_at_tpr(sc.s_known, tpr)
            at = rates_at_threshold(sc.s_known, sc.correct, sc.s_unknown, t)
            ax.plot(at["fpr"], at["tpr" if kind == "roc" else "ccr"], "o", color="red", ms=6,
                    label=f"{100 * tpr:g}% TPR: FPR {100 * at['fpr']:.1f}%")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("FPR (unknown images accepted)", fontsize=9)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        titles.append(_panel_title(sc))
        ax.set_title(titles[-1], fontsize=10)
    what = "ROC, known vs unknown" if kind == "roc" else "OSCR: correct classification vs unknown accepted"
    plotkit.title(fig, f"{what}: {method_title(method)}", labels, fontsize=11)
    fig.tight_layout()
    return plotkit.save(fig, path, titles, dpi=100)


def plot_roc(scores: Mapping[str, RunScores], method: dict[str, Any], path: Path, labels: list[str],
             tpr: float = 0.95) -> Path | None:
    """ROC curves of ``method``, one panel per split, AUROC in the legend, its ``tpr`` point marked."""
    return _curve_figure(scores, method, path, labels, tpr, "roc")


def plot_oscr(scores: Mapping[str, RunScores], method: dict[str, Any], path: Path, labels: list[str],
              tpr: float = 0.95) -> Path | None:
    """OSCR curves of ``method``, one panel per split, OSCR in the legend, the ``tpr`` point marked."""
    return _curve_figure(scores, method, path, labels, tpr, "oscr")


def _bins(values: np.ndarray) -> np.ndarray:
    finite = values[np.isfinite(values)]
    if not finite.size or finite.min() == finite.max():
        centre = float(finite[0]) if finite.size else 0.0
        return np.linspace(centre - 0.5, centre + 0.5, 11)
    return np.histogram_bin_edges(finite, bins=min(MAX_BINS, max(10, int(np.sqrt(finite.size)))))


def plot_score_distributions(scores: Mapping[str, RunScores], methods: Mapping[str, dict[str, Any]], path: Path,
                             labels: list[str], thresholds: Mapping[str, HeadThreshold] | None = None) -> Path | None:
    """Histogram (density) of the open-set score per split: all known test images, and each unknown
    generator apart; a saved head's threshold, where one belongs to that split's line, as a line.

    ``methods``: the method drawn in each split (its title names it when they differ)."""
    if not scores:
        return None
    thresholds = thresholds or {}
    plt = plotkit.pyplot()
    splits = split_order(scores)
    fig, axes = plotkit.panel_grid(plt, len(splits), panel=(5.0, 3.6), max_cols=3)
    colors = plt.get_cmap("tab10").colors
    same = len({method_title(m) for m in methods.values()}) == 1
    titles = []
    for ax, s in zip(axes, splits):
        sc = scores[s]
        bins = _bins(np.r_[sc.s_known, sc.s_unknown])
        groups = [(f"known ({len(sc.s_known)})", sc.s_known, plotkit.KNOWN_COLOR, "stepfilled")]
        for i, g in enumerate(sc.unknown_generators):
            vals = sc.s_unknown[sc.unknown_source == g]
            groups.append((f"{g} ({len(vals)})", vals, colors[i % len(colors)], "step"))
        handles = []  # in this order in the legend: known, each unknown generator, the threshold
        for name, vals, color, style in groups:
            if vals.size:
                *_, patches = ax.hist(np.clip(vals, bins[0], bins[-1]), bins=bins, density=True, histtype=style,
                                      lw=1.4, color=color, alpha=0.25 if style == "stepfilled" else 0.95, label=name)
                handles.append(patches[0])
        head = thresholds.get(s)
        if head is not None:
            handles.append(ax.axvline(head.threshold, color="red", ls="--", lw=1.5,
                                      label=f"saved head's threshold {head.threshold:.4g}"))
        ax.set_xlabel(f"open-set score ({sc.line['score']}; higher = more likely known)", fontsize=9)
        ax.set_ylabel("density", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(handles=handles, fontsize=7, loc="best")
        titles.append(_panel_title(sc) + ("" if same else f"\n{method_title(methods[s])}"))
        ax.set_title(titles[-1], fontsize=9 if not same else 10)
    what = f"open-set score of the test images: {method_title(next(iter(methods.values())))}" if same else \
        "open-set score of the test images (the method of each split's saved head)"
    plotkit.title(fig, what, labels, fontsize=11)
    fig.tight_layout()
    return plotkit.save(fig, path, titles, dpi=100)
