"""The robustness report: ``robustness.csv``, ``robustness.md`` and ``robustness.png`` from a study's runs.

Reads the index ``OUT/robustness.json`` (:mod:`attrib.probe.robustness`) and each run's
``results.jsonl``; every (training, condition, method) becomes one row with each metric's mean ± std over
splits and seeds, in %, as :func:`attrib.probe.tables.aggregate` computes them for ``attrib report``. Rows
of the clean-trained and augmentation-trained studies sit next to each other, so what augmentation buys
reads off the table. Only the standard library and numpy are needed until the plot is drawn (matplotlib
is imported there).
"""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attrib.probe.plotkit import pyplot, save, title
from attrib.probe.tables import (GROUP, METRICS, NAMES, PAPER_METRICS, aggregate, cell, markdown as md_table,
                                 method_name, warning_labels, warnings_md)
from attrib.probe.results import RESULTS, read_results
from attrib.probe.robustness import CLEAN, INDEX, NONE, RobustnessError

CSV_NAME, MD_NAME, PNG_NAME = "robustness.csv", "robustness.md", "robustness.png"
COLUMNS = ["train", "perturbation", "intensity", "view", "method", *GROUP, "runs"]


def read_index(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(out_dir) / INDEX
    try:
        return list(json.loads(path.read_text())["runs"])
    except FileNotFoundError:
        raise RobustnessError(f"{path} does not exist: run `attrib robustness ... --out {out_dir}` first") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise RobustnessError(f"{path}: not a robustness index ({exc}); rerun `attrib robustness`") from None


def collect(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """One row per (training, condition, method): the index entry, the method and its metrics in %.

    Sorted by method, then condition (clean first, perturbations in the study's order, intensity), then
    training (clean first), so the rows of one condition trained both ways are adjacent.
    """
    out_dir = Path(out_dir)
    index = read_index(out_dir)
    order = {p: i for i, p in enumerate(dict.fromkeys(e["perturbation"] for e in index))}
    trains = {t: i for i, t in enumerate(dict.fromkeys(e["train"] for e in index))}
    rows = []
    for entry in index:
        if not (out_dir / entry["results"] / RESULTS).exists():  # every line of that study failed
            continue
        for agg in aggregate(read_results(out_dir / entry["results"])):
            row = {**entry, "method": method_name(agg), **{k: agg[k] for k in GROUP}, "runs": agg["n_runs"]}
            row.update({k: agg[k] for m in METRICS for k in (m, m + "_std")})
            rows.append(row)
    rows.sort(key=lambda r: (r["method"], order[r["perturbation"]], int(r["intensity"]), trains[r["train"]]))
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    fields = COLUMNS + [k for m in METRICS for k in (m, m + "_std")] + ["train_features", "eval_features", "label"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: f"{r[k]:.4f}" if isinstance(r.get(k), float) else r.get(k, "") for k in fields})
    return path


def markdown(rows: list[dict[str, Any]], metrics: tuple[str, ...] = PAPER_METRICS) -> str:
    """One table per method: a row per (condition, training), metrics as mean ± std in %."""
    lines = warnings_md(warning_labels(rows))
    by_method: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_method[r["method"]].append(r)
    for method, rs in by_method.items():
        head = ["perturbation", "intensity", "view", "trained on", "runs"] + [NAMES[m] for m in metrics]
        body = [[r["perturbation"], str(r["intensity"]), r["view"], r["train"], str(r["runs"])]
                + [cell(r[m], r[m + "_std"]) for m in metrics] for r in rs]
        lines += [f"### {method}", "", md_table(head, body), ""]
    return "\n".join(lines)


def _values_of(perturbation: str) -> str:
    from attrib.extract.views import PAPER_INTENSITIES

    return "/".join(f"{v:g}" for v in PAPER_INTENSITIES.get(perturbation, ()))


def plot(rows: list[dict[str, Any]], path: Path, metrics: tuple[str, ...] = PAPER_METRICS) -> Path | None:
    """One panel per metric (a row of panels per method): x = intensity, a line per perturbation (solid:
    trained clean; dotted: trained on the training view), the clean condition's value as a dashed line."""
    by_method: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_method[r["method"]].append(r)
    if not by_method:
        return None
    plt = pyplot()
    labels = warning_labels(rows)
    height = 3.6 * len(by_method) + 1.2  # inches: the panels, and the title above them
    fig, axes = plt.subplots(len(by_method), len(metrics), figsize=(5 * len(metrics), height), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    perts = list(dict.fromkeys(r["perturbation"] for r in rows if r["perturbation"] != NONE))
    trains = list(dict.fromkeys(r["train"] for r in rows))
    for ax_row, (method, rs) in zip(axes, by_method.items()):
        for ax, m in zip(ax_row, metrics):
            for t_i, train in enumerate(trains):
                style = "-" if train == CLEAN else ":"
                trained = "" if train == CLEAN else f", trained on {train}"
                for p_i, p in enumerate(perts):
                    pts = sorted((int(r["intensity"]), r[m], r[m + "_std"]) for r in rs
                                 if r["perturbation"] == p and r["train"] == train)
                    if pts:
                        x, y, e = (np.array(v, dtype=float) for v in zip(*pts))
                        ax.errorbar(x, y, yerr=e, ls=style, marker="os"[t_i % 2], ms=3, capsize=2,
                                    color=colors[p_i % len(colors)], label=f"{p} ({_values_of(p)}){trained}")
                clean = [r[m] for r in rs if r["perturbation"] == NONE and r["train"] == train]
                if clean and not np.isnan(clean[0]):
                    ax.axhline(clean[0], ls="--" if train == CLEAN else "-.", color="black" if train == CLEAN
                               else "grey", lw=1, label=f"clean{trained}")
            ax.set_title(f"{NAMES[m]}\n{method}", fontsize=8)
            ax.set_xlabel("intensity (the paper's level)")
            ax.set_ylabel("%")
            ax.set_xticks([1, 2, 3, 4, 5])
            ax.grid(alpha=0.3)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(4, max(1, len(names))),
               fontsize=7, frameon=False)
    title(fig, "robustness: trained clean" + ("".join(f" / on {t}" for t in trains if t != CLEAN))
          + ", evaluated on perturbed images (mean ± std over splits and seeds)", labels)
    # fixed margins in inches (tight_layout would draw the figure twice); the legend hangs below the
    # panels and the saved image grows to hold it (bbox_inches)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.7 / height, top=1 - 1.1 / height, wspace=0.25, hspace=0.55)
    return save(fig, path, [ax.get_title() for ax in axes.flat], bbox_inches="tight")


@dataclass
class RobustnessReport:
    rows: list[dict[str, Any]]
    main: str
    paths: dict[str, Path] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)


def write_robustness(out_dir: str | os.PathLike) -> RobustnessReport:
    """Write robustness.csv, robustness.md and robustness.png into ``out_dir`` (the study's --out)."""
    out_dir = Path(out_dir)
    rows = collect(out_dir)
    if not rows:
        raise RobustnessError(f"{out_dir}: no finished result lines in any run; nothing to report")
    rep = RobustnessReport(rows, markdown(rows), labels=warning_labels(rows))
    rep.paths["csv"] = write_csv(rows, out_dir / CSV_NAME)
    (out_dir / MD_NAME).write_text(f"# attrib robustness: {out_dir}\n\nMean ± std over splits and seeds, in %; "
                                   "intensity 0 = clean images.\n\n" + rep.main + "\n")
    rep.paths["markdown"] = out_dir / MD_NAME
    png = plot(rows, out_dir / PNG_NAME)
    if png is not None:
        rep.paths["plot"] = png
    return rep


__all__ = ["collect", "markdown", "plot", "write_csv", "write_robustness", "read_index", "RobustnessReport"]
