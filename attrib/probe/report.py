"""Reports: aggregate ``results.jsonl`` into the paper's table shape (Markdown, CSV) and plots.

A *method* is (layer, head, score, shots, protocol, params); its numbers are the mean ± std over every
split and seed it ran on, in percent. The std is the population std (ddof=0) over those runs. Results
computed from random-init features keep their warning label in every output: tables, CSV rows and plot
titles.

The main table shows closed-set accuracy, AUROC and OSCR with attrib's standard conventions
(``--metrics standard``), or the paper's conventions of the same quantities (``--metrics paper``:
``auroc_paper``, ``oscr_paper``, ``tnr95_paper``, see :mod:`attrib.probe.metrics`), the ones to put beside
the paper's published table. Both are in every result line, table.csv and the all-metrics table.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attrib.output_paths import make_folder
from attrib.probe.options import StudyError
from attrib.probe.params import params_label
from attrib.probe.results import evaluated_on, read_results
from attrib.probe.shots import fell_short, used_per_class

PAPER_METRICS = ("accuracy", "auroc", "oscr")  # the paper's table: its three quantities, standard conventions
METRICS = ("accuracy", "macro_f1", "auroc", "fpr95", "aupr_in", "aupr_out", "oscr")
PAPER_CONVENTION_METRICS = ("auroc_paper", "oscr_paper", "tnr95_paper")
ALL_METRICS = METRICS + PAPER_CONVENTION_METRICS
# --metrics: the main table's columns, and the metric that picks the highlighted method
MAIN_METRICS = {"standard": PAPER_METRICS, "paper": ("accuracy",) + PAPER_CONVENTION_METRICS}
MAIN_DESCRIPTION = {
    "standard": "standard conventions (a tied known/unknown pair counts 1/2 in AUROC; OSCR without lag)",
    "paper": "the paper's code's conventions (auroc_paper: a tie counts 0; oscr_paper: lagged walk; tnr95_paper: "
             "TNR at the point whose TPR is nearest 95%)"}
BEST_BY = {"standard": "oscr", "paper": "oscr_paper"}
NAMES = {"accuracy": "closed-set acc.", "macro_f1": "macro-F1", "auroc": "AUROC", "fpr95": "FPR@95TPR ↓",
         "aupr_in": "AUPR-in", "aupr_out": "AUPR-out", "oscr": "OSCR", "auroc_paper": "AUROC (paper)",
         "oscr_paper": "OSCR (paper)", "tnr95_paper": "TNR@95TPR (paper)"}
GROUP = ("layer", "head", "score", "shots", "protocol", "params")


def _layer_sort(layer: str) -> tuple:
    return (1, 0, layer) if layer.startswith("concat") else (0, int(layer), "")


def _shots_sort(s: str) -> tuple:
    return (1, 0) if s == "all" else (0, int(s))


def method_name(r: dict[str, Any]) -> str:
    params = f" / {r['params']}" if r.get("params") else ""
    return f"{r['layer']} / {r['head']}+{r['score']} / shots {r['shots']} / {r['protocol']}{params}"


def _group_value(r: dict[str, Any], key: str) -> str:
    """A result line's value of a GROUP field: ``params`` is its ``--param`` settings as text (``""``
    for every default), ``protocol`` defaults to clean (lines written before protocols existed)."""
    if key == "params":
        return params_label((r.get("config") or {}).get("params"))
    return str(r.get(key, "clean" if key == "protocol" else ""))


def _values(rs: list[dict], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else r[key] for r in rs], dtype=float)


def _hparams(rs: list[dict]) -> str:
    """The chosen path values of a method's runs: one value, or median [min-max] over runs."""
    by: dict[str, list] = defaultdict(list)
    for r in rs:
        for k, v in (r.get("hparams") or {}).items():
            by[k].append(v)
    out = []
    for k, vs in by.items():
        try:
            arr = np.array(vs, dtype=float)
        except (TypeError, ValueError):
            out.append(f"{k}={'/'.join(sorted(set(map(str, vs))))}")
            continue
        out.append(f"{k}={arr[0]:.3g}" if np.all(arr == arr[0]) else
                   f"{k}={np.median(arr):.3g} [{arr.min():.3g}–{arr.max():.3g}]")
    return ", ".join(out) or "-"


def aggregate(results: list[dict[str, Any]], metrics: tuple[str, ...] = ALL_METRICS) -> list[dict[str, Any]]:
    """One row per method: mean and std over its runs (splits x seeds) of each metric, in %."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        groups[tuple(_group_value(r, k) for k in GROUP)].append(r)
    rows = []
    for key, rs in groups.items():
        row: dict[str, Any] = dict(zip(GROUP, key))
        row["n_runs"] = len(rs)
        row["splits"] = len({str(r["split"]) for r in rs})
        row["seeds"] = len({int(r["seed"]) for r in rs})
        row["hparams"] = _hparams(rs)
        row["train_per_class"] = used_per_class(rs)  # what the shots value really trained on
        row["shots_short"] = fell_short(row["shots"], rs)
        for m in metrics:
            vals = _values(rs, m) * 100
            ok = vals[~np.isnan(vals)]
            row[m] = float(ok.mean()) if ok.size else float("nan")
            row[m + "_std"] = float(ok.std()) if ok.size else float("nan")
        row["_runs"] = rs
        rows.append(row)
    rows.sort(key=lambda r: (r["protocol"], r["head"], r["score"], r["params"], _shots_sort(r["shots"]),
                             _layer_sort(r["layer"])))
    return rows


def _shots_cell(r: dict[str, Any]) -> str:
    """The shots value, with the per-class counts it really trained on when some class had fewer."""
    return f"{r['shots']} (used {r['train_per_class']}/class)" if r.get("shots_short") else r["shots"]


def _shots_notes(rows: list[dict[str, Any]]) -> list[str]:
    short = sorted({r["shots"] for r in rows if r.get("shots_short")}, key=_shots_sort)
    if not short:
        return []
    return [f"Shots {', '.join(short)}: some classes have fewer training images than that and trained on all "
            "they have; `used` gives the training images per class (min–max over classes, splits and seeds).", ""]


def _cell(mean: float, std: float) -> str:
    return "n/a" if np.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


def markdown_table(rows: list[dict[str, Any]], metrics: tuple[str, ...] = PAPER_METRICS,
                   hparams: bool = False) -> str:
    """The rows as a Markdown table; a ``params`` column (the ``--param`` settings) only when a row has some."""
    params = any(r.get("params") for r in rows)
    head = ["layer", "head", "score", "shots", "protocol"] + (["params"] if params else []) + ["runs"]
    head += (["chosen"] if hparams else []) + [NAMES.get(m, m) for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["layer"], r["head"], r["score"], _shots_cell(r), r["protocol"]]
        cells += ([r.get("params") or "default"] if params else []) + [str(r["n_runs"])]
        cells += [r["hparams"]] if hparams else []
        cells += [_cell(r[m], r[m + "_std"]) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_unknown(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method and unknown generator: AUROC (mean ± std over the runs where it was unknown, in %)
    and the known class it is most often mistaken for (its predictions summed over those runs)."""
    out = []
    for row in rows:
        aurocs: dict[str, list[float]] = defaultdict(list)
        counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for r in row["_runs"]:
            for g, v in (r.get("auroc_per_unknown") or {}).items():
                aurocs[g].append(np.nan if v is None else v * 100)
            for g, cs in (r.get("unknown_confusion") or {}).items():
                for name, c in zip(r["classes"], cs):
                    counts[g][name] += int(c)
        for g in sorted(aurocs):
            vals = np.array(aurocs[g], dtype=float)
            vals = vals[~np.isnan(vals)]
            total = sum(counts[g].values())
            top = max(counts[g].items(), key=lambda kv: kv[1], default=("-", 0))  # ties: first seen
            out.append({**{k: row[k] for k in GROUP}, "generator": g, "runs": len(aurocs[g]),
                        "auroc": float(vals.mean()) if vals.size else float("nan"),
                        "auroc_std": float(vals.std()) if vals.size else float("nan"),
                        "mistaken_for": top[0], "fraction": 100 * top[1] / total if total else float("nan")})
    return out


def _labels(results: list[dict[str, Any]]) -> list[str]:
    return sorted({r.get("label", "") for r in results if r.get("label")})


def _warnings_md(labels: list[str]) -> list[str]:
    return [line for lab in labels for line in
            (f"> **WARNING — {lab}.** These numbers come from untrained weights and say nothing about CLIP.", "")]


@dataclass
class Report:
    """What :func:`write_report` wrote; ``main`` is the main table as Markdown, warnings included."""

    paths: dict[str, Path] = field(default_factory=dict)
    main: str = ""
    labels: list[str] = field(default_factory=list)
    highlight: str = ""


# ---------------------------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _metric_grid(plt, labels: list[str], title: str):
    fig, axes = plt.subplots(2, 4, figsize=(17, 7.5))
    axes = axes.ravel()
    axes[-1].axis("off")
    sup = title + ("\n" + " / ".join(labels) if labels else "")
    fig.suptitle(sup, color="red" if labels else "black", fontsize=10)
    return fig, axes


def _plot_lines(path: Path, series: dict[str, list[tuple[float, dict]]], xlabel: str, xticks: dict | None,
                labels: list[str], title: str) -> Path:
    plt = _plt()
    fig, axes = _metric_grid(plt, labels, title)
    for ax, m in zip(axes, METRICS):
        for name, pts in series.items():
            pts = sorted(pts, key=lambda p: p[0])
            x = [p[0] for p in pts]
            y = np.array([p[1][m] for p in pts])
            e = np.array([p[1][m + "_std"] for p in pts])
            ax.errorbar(x, y, yerr=e, marker="o", ms=3, capsize=2, label=name)
        ax.set_title(NAMES[m])
        ax.set_xlabel(xlabel)
        ax.set_ylabel("%")
        ax.grid(alpha=0.3)
        if xticks:
            ax.set_xticks(list(xticks), list(xticks.values()))
        else:
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, names = axes[0].get_legend_handles_labels()
    # Below the panels, as many columns as fit the figure's width: inside a panel, a study with many
    # methods overflowed onto the others. The saved image grows downwards to hold it (bbox_inches).
    col_inches = 0.06 * max(map(len, names), default=1) + 0.5  # 7-pt text plus the marker and spacing
    ncol = max(1, min(len(names), int(fig.get_figwidth() // col_inches)))
    fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, fontsize=7,
               frameon=False)
    # fixed margins: tight_layout draws the figure twice and doubles the time a report takes
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.08, top=0.88, wspace=0.25, hspace=0.4)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _params_suffix(r: dict) -> str:
    return f" [{r['params']}]" if r.get("params") else ""


def plot_by_layer(rows: list[dict], path: Path, labels: list[str]) -> Path | None:
    series: dict[str, list] = defaultdict(list)
    for r in rows:
        if not r["layer"].startswith("concat"):
            series[f"{r['head']}+{r['score']} shots={r['shots']} {r['protocol']}{_params_suffix(r)}"].append(
                (int(r["layer"]) + 1, r))
    if not series:
        return None
    return _plot_lines(path, series, "block (1-based, as in the paper's figures)", None, labels,
                       "metrics by block (mean ± std over splits and seeds)")


def plot_by_shots(rows: list[dict], path: Path, labels: list[str]) -> Path | None:
    shots = sorted({r["shots"] for r in rows}, key=_shots_sort)
    if len(shots) < 2:
        return None
    pos = {s: i for i, s in enumerate(shots)}
    series: dict[str, list] = defaultdict(list)
    for r in rows:
        series[f"layer {r['layer']} {r['head']}+{r['score']} {r['protocol']}{_params_suffix(r)}"].append(
            (pos[r["shots"]], r))
    return _plot_lines(path, series, "training images per class", {i: s for s, i in pos.items()}, labels,
                       "metrics by shots (mean ± std over splits and seeds)")


def plot_confusion(row: dict, path: Path, labels: list[str]) -> Path | None:
    """Row-normalised confusion of one method, one panel per split (summed over seeds): known classes
    on top, then each unknown generator (which known class it was taken for)."""
    by_split: dict[str, list[dict]] = defaultdict(list)
    for r in row["_runs"]:
        if r.get("confusion"):
            by_split[str(r["split"])].append(r)
    if not by_split:
        return None
    plt = _plt()
    splits = sorted(by_split, key=lambda s: (len(s), s))
    fig, axes = plt.subplots(1, len(splits), figsize=(4.2 * len(splits) + 1, 5.2), squeeze=False)
    for ax, s in zip(axes[0], splits):
        rs = by_split[s]
        classes = rs[0]["classes"]
        cm = np.sum([np.array(r["confusion"], dtype=float) for r in rs], axis=0)
        unknown = list(rs[0].get("unknown_confusion") or {})
        um = np.array([np.sum([r["unknown_confusion"][g] for r in rs], axis=0) for g in unknown], dtype=float)
        mat = np.vstack([cm, um]) if len(unknown) else cm
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = mat / mat.sum(axis=1, keepdims=True)
        ax.imshow(np.nan_to_num(frac), vmin=0, vmax=1, cmap="Blues")
        for (i, j), v in np.ndenumerate(frac):
            if not np.isnan(v):
                ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if v > 0.6 else "black")
        if len(unknown):
            ax.axhline(len(classes) - 0.5, color="red", lw=1.5)
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(mat)), list(classes) + [f"{g} (unknown)" for g in unknown], fontsize=7)
        ax.set_xlabel("predicted (known classes)")
        ax.set_title(f"split {s} ({len(rs)} seed{'s' if len(rs) > 1 else ''})", fontsize=9)
    title = f"confusion, % of each row: {method_name(row)}"
    fig.suptitle(title + ("\n" + " / ".join(labels) if labels else ""), color="red" if labels else "black",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------ files
def _write_csv(path: Path, rows: list[dict], fields: list[str], label: str, extra: dict | None = None) -> Path:
    """``fields`` of each row, then the ``extra`` columns (one value for every row) and ``label``."""
    extra = dict(extra or {})
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields + list(extra) + ["label"], extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.4f}" if isinstance(r.get(k), float) else r.get(k)) for k in fields} |
                       extra | {"label": label})
    return path


def write_report(results_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                 metrics: str = "standard") -> Report:
    """Write table.md, table.csv, per_unknown.csv and the plots; return what was written.

    ``metrics``: the conventions of the main table, ``standard`` or ``paper`` (:data:`MAIN_METRICS`);
    the highlighted method is the one with the best mean OSCR under the same conventions.
    """
    if metrics not in MAIN_METRICS:
        raise StudyError(f"--metrics {metrics!r}: use one of {', '.join(MAIN_METRICS)}")
    main_metrics = MAIN_METRICS[metrics]
    results_dir = Path(results_dir)
    out_dir = make_folder(out_dir or results_dir, "--out", StudyError)
    results = read_results(results_dir)
    rep = Report(labels=_labels(results))
    if not results:
        raise StudyError(f"{results_dir}: results.jsonl has no finished lines yet")
    rows = aggregate(results)
    best_by = BEST_BY[metrics]
    best = max(range(len(rows)), key=lambda i: (np.nan_to_num(rows[i][best_by], nan=-1.0), -i))
    highlight = rows[best]
    rep.highlight = method_name(highlight)
    fsets = sorted({r["feature_set"] for r in results})
    evals = sorted({evaluated_on(r)[0] for r in results})
    n_splits, n_seeds = len({str(r["split"]) for r in results}), len({int(r["seed"]) for r in results})
    label = "; ".join(rep.labels)

    conventions = f"Metrics: {metrics} — {MAIN_DESCRIPTION[metrics]}."
    main = _warnings_md(rep.labels) + [
        f"Mean ± std over {n_splits} split(s) x {n_seeds} seed(s), in %. Layers are 0-based block indices. "
        f"{conventions}", "", *_shots_notes(rows), markdown_table(rows, main_metrics)]
    rep.main = "\n".join(main)
    unk = per_unknown(rows)
    hl_unk = [u for u in unk if all(u[k] == highlight[k] for k in GROUP)]

    rep.paths["csv"] = _write_csv(out_dir / "table.csv", rows, list(GROUP) + ["train_per_class", "n_runs", "splits",
                                                                              "seeds", "hparams"]
                                  + [x for m in ALL_METRICS for x in (m, m + "_std")], label, {"metrics": metrics})
    rep.paths["per_unknown_csv"] = _write_csv(out_dir / "per_unknown.csv", unk, list(GROUP) + [
        "generator", "runs", "auroc", "auroc_std", "mistaken_for", "fraction"], label)
    for key, plot, data, name in (("plot_layers", plot_by_layer, rows, "metrics_by_layer.png"),
                                  ("plot_shots", plot_by_shots, rows, "metrics_by_shots.png"),
                                  ("plot_confusion", plot_confusion, highlight, "confusion.png")):
        path = plot(data, out_dir / name, rep.labels)
        if path is None:  # drop a stale plot this study no longer makes
            (out_dir / name).unlink(missing_ok=True)
        else:
            rep.paths[key] = path

    md = [f"# attrib results: {results_dir}", ""] + _warnings_md(rep.labels) + [
        f"Feature set(s): {', '.join(fsets)}", "",
        "Validation and test images read from (`--eval-features`): " +
        (", ".join(evals) if evals != fsets else "the same feature set(s)"), "",
        "## Main table", "",
        f"Mean ± std (population, over runs) over {n_splits} split(s) x {n_seeds} seed(s), in %. Layers are "
        "0-based block indices; `clean` = hyperparameters chosen on known-class validation data only, `paper` = "
        "training classes balanced by cycling and hyperparameters chosen by validation auroc_paper against the "
        f"unknown generators (the paper's code; optimistic). {conventions}", "",
        *_shots_notes(rows), markdown_table(rows, main_metrics), "",
        "## All metrics", "",
        "`chosen` = the path hyperparameter each run selected (median [range] over runs). FPR@95TPR: lower is "
        "better. The `(paper)` columns are the same quantities with the paper's code's conventions.", "",
        markdown_table(rows, ALL_METRICS, hparams=True), "",
        "## Unknown generators", "",
        f"For `{rep.highlight}` (the method with the highest mean {NAMES[best_by]}); every method is in "
        "`per_unknown.csv`. "
        "AUROC of all known test images against that generator's; *mistaken for* = the known class the head "
        "assigns most of its images to.", "",
        "| generator | runs | AUROC | mistaken for | % of its images |", "|---|---|---|---|---|"]
    md += [f"| {u['generator']} | {u['runs']} | {_cell(u['auroc'], u['auroc_std'])} | {u['mistaken_for']} | "
           f"{u['fraction']:.1f} |" for u in hl_unk]
    from attrib.probe.grouptables import group_section  # it imports this module's table helpers
    md += group_section(rows, out_dir, label, main_metrics, rep.paths)
    md += ["", "## Files", ""] + [f"- `{p.name}`" for p in rep.paths.values()] + [""]
    rep.paths = {"markdown": out_dir / "table.md", **rep.paths}
    rep.paths["markdown"].write_text("\n".join(md))
    return rep
