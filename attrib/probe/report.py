"""Reports: aggregate ``results.jsonl`` into the paper's table shape, CSV, Markdown and plots.

Numbers are shown as percentages, mean ± std over splits and seeds, one row per method
(layer, head, score, shots). Results computed from random-init features carry their label everywhere.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from attrib.probe.study import read_results

METRICS = ("accuracy", "auroc", "oscr")
GROUP = ("layer", "head", "score", "shots", "protocol")


def _layer_sort(layer: str) -> tuple:
    return (1, layer) if layer.startswith("concat") else (0, int(layer))


def aggregate(results: list[dict[str, Any]], metrics: tuple[str, ...] = METRICS) -> list[dict[str, Any]]:
    """One row per method: mean and std (population, over splits x seeds) of each metric, in %."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        groups[tuple(str(r[k]) for k in GROUP)].append(r)
    rows = []
    for key, rs in groups.items():
        row: dict[str, Any] = dict(zip(GROUP, key))
        row["n_runs"] = len(rs)
        row["splits"] = len({r["split"] for r in rs})
        for m in metrics:
            vals = np.array([r[m] for r in rs if r.get(m) is not None], dtype=float) * 100
            row[m] = float(np.nanmean(vals)) if vals.size else float("nan")
            row[m + "_std"] = float(np.nanstd(vals)) if vals.size else float("nan")
        rows.append(row)
    shots_key = lambda s: (1, 0) if s == "all" else (0, int(s))  # noqa: E731
    rows.sort(key=lambda r: (r["protocol"], r["head"], r["score"], shots_key(r["shots"]), _layer_sort(r["layer"])))
    return rows


def markdown_table(rows: list[dict[str, Any]], metrics: tuple[str, ...] = METRICS) -> str:
    names = {"accuracy": "closed-set acc.", "auroc": "AUROC", "oscr": "OSCR"}
    head = ["layer", "head", "score", "shots", "protocol", "runs"] + [names.get(m, m) for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["layer"], r["head"], r["score"], r["shots"], r["protocol"], str(r["n_runs"])]
        cells += [f"{r[m]:.2f} ± {r[m + '_std']:.2f}" for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _labels(results: list[dict[str, Any]]) -> list[str]:
    return sorted({r.get("label", "") for r in results if r.get("label")})


def write_report(results_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Write ``table.md``, ``table.csv`` and ``metrics_by_layer.png``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir else results_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    results = read_results(results_dir)
    rows = aggregate(results)
    labels = _labels(results)
    fsets = sorted({r["feature_set"] for r in results})
    paths: dict[str, Path] = {}

    md = [f"# attrib results: {results_dir}", ""]
    for lab in labels:
        md += [f"> **WARNING — {lab}.** These numbers come from untrained weights and say nothing about CLIP.", ""]
    md += [f"Feature set(s): {', '.join(fsets)}", "",
           "Mean ± std over splits and seeds, in %. Layers are 0-based block indices.", "",
           markdown_table(rows), ""]
    paths["markdown"] = out_dir / "table.md"
    paths["markdown"].write_text("\n".join(md))

    paths["csv"] = out_dir / "table.csv"
    with open(paths["csv"], "w", newline="") as f:
        fields = list(GROUP) + ["n_runs", "splits"] + [x for m in METRICS for x in (m, m + "_std")] + ["label"]
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "label": "; ".join(labels)})

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.4), sharex=True)
    methods = defaultdict(list)
    for r in rows:
        if not r["layer"].startswith("concat"):
            methods[(r["head"], r["score"], r["shots"], r["protocol"])].append(r)
    for ax, m in zip(axes, METRICS):
        for (head, score, shots, proto), rs in sorted(methods.items()):
            x = np.array([int(r["layer"]) for r in rs]) + 1  # plots count blocks from 1, like the paper
            y = np.array([r[m] for r in rs])
            e = np.array([r[m + "_std"] for r in rs])
            ax.errorbar(x, y, yerr=e, marker="o", ms=3, capsize=2, label=f"{head}+{score} shots={shots}")
        ax.set_title({"accuracy": "closed-set accuracy", "auroc": "AUROC", "oscr": "OSCR"}[m])
        ax.set_xlabel("block (1-based)")
        ax.set_ylabel("%")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if labels:
        fig.suptitle(" / ".join(labels), color="red", fontsize=9)
    fig.tight_layout()
    paths["plot_layers"] = out_dir / "metrics_by_layer.png"
    fig.savefig(paths["plot_layers"], dpi=120)
    plt.close(fig)
    return paths
