"""Aggregate result lines into the paper's table shape: one row per method, mean ± std in %.

A *method* is (layer, head, score, shots, protocol, params); its numbers are the mean ± std over every
split and seed it ran on, in percent. The std is the population std (ddof=0) over those runs. Results
computed from random-init features keep their warning label in every output: tables, CSV rows and plot
titles.

The main table shows closed-set accuracy, AUROC and OSCR with attrib's standard conventions
(``--metrics standard``), or the paper's conventions of the same quantities (``--metrics paper``:
``auroc_paper``, ``oscr_paper``, ``tnr95_paper``, see :mod:`attrib.probe.metrics`), the ones to put beside
the paper's published table. Both are in every result line, table.csv and the all-metrics table.

Why apart from the report: the tables are pure arithmetic on result lines (no files, no matplotlib), and
the report, its plots, its HTML page and the comparison of studies all read them.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from attrib.probe.params import params_label
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


def layer_sort(layer: str) -> tuple:
    return (1, 0, layer) if layer.startswith("concat") else (0, int(layer), "")


def shots_sort(s: str) -> tuple:
    return (1, 0) if s == "all" else (0, int(s))


def method_name(r: dict[str, Any]) -> str:
    params = f" / {r['params']}" if r.get("params") else ""
    return f"{r['layer']} / {r['head']}+{r['score']} / shots {r['shots']} / {r['protocol']}{params}"


def group_value(r: dict[str, Any], key: str) -> str:
    """A result line's value of a GROUP field: ``params`` is its ``--param`` settings as text (``""``
    for every default), ``protocol`` defaults to clean (lines written before protocols existed)."""
    if key == "params":
        return params_label((r.get("config") or {}).get("params"))
    return str(r.get(key, "clean" if key == "protocol" else ""))


def method_key(line: dict[str, Any]) -> tuple[str, ...]:
    """Which method a result line belongs to: its GROUP values (an aggregated row holds them as they are)."""
    return tuple(group_value(line, k) for k in GROUP)


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
        groups[method_key(r)].append(r)
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
    rows.sort(key=lambda r: (r["protocol"], r["head"], r["score"], r["params"], shots_sort(r["shots"]),
                             layer_sort(r["layer"])))
    return rows


def shots_cell(r: dict[str, Any]) -> str:
    """The shots value, with the per-class counts it really trained on when some class had fewer."""
    return f"{r['shots']} (used {r['train_per_class']}/class)" if r.get("shots_short") else r["shots"]


def shots_notes(rows: list[dict[str, Any]]) -> list[str]:
    """A note (and a blank line) above a table whose shots values some class could not fill."""
    short = sorted({r["shots"] for r in rows if r.get("shots_short")}, key=shots_sort)
    if not short:
        return []
    return [f"Shots {', '.join(short)}: some classes have fewer training images than that and trained on all "
            "they have; `used` gives the training images per class (min–max over classes, splits and seeds).", ""]


def cell(mean: float, std: float) -> str:
    return "n/a" if np.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


def table_cells(rows: list[dict[str, Any]], metrics: tuple[str, ...] = PAPER_METRICS,
                hparams: bool = False) -> tuple[list[str], list[list[str]]]:
    """(header, cells) of the methods table: the one shape Markdown and HTML both render; a ``params``
    column (the ``--param`` settings) only when a row has some."""
    params = any(r.get("params") for r in rows)
    head = ["layer", "head", "score", "shots", "protocol"] + (["params"] if params else []) + ["runs"]
    head += (["chosen"] if hparams else []) + [NAMES.get(m, m) for m in metrics]
    body = []
    for r in rows:
        cells = [r["layer"], r["head"], r["score"], shots_cell(r), r["protocol"]]
        cells += ([r.get("params") or "default"] if params else []) + [str(r["n_runs"])]
        cells += [r["hparams"]] if hparams else []
        cells += [cell(r[m], r[m + "_std"]) for m in metrics]
        body.append(cells)
    return head, body


def markdown(head: list[str], body: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def markdown_table(rows: list[dict[str, Any]], metrics: tuple[str, ...] = PAPER_METRICS,
                   hparams: bool = False) -> str:
    return markdown(*table_cells(rows, metrics, hparams))


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


def best_method(rows: list[dict[str, Any]], by: str = "oscr") -> dict[str, Any]:
    """The method with the highest mean ``by`` (OSCR; the first of equals; a method without it last)."""
    best = max(range(len(rows)), key=lambda i: (np.nan_to_num(rows[i][by], nan=-1.0), -i))
    return rows[best]


def warning_labels(results: list[dict[str, Any]]) -> list[str]:
    """The distinct random-init warning labels of the result lines ('' = real weights, no label)."""
    return sorted({r.get("label", "") for r in results if r.get("label")})


WARNING_TEXT = "These numbers come from untrained weights and say nothing about CLIP."


def warnings_md(labels: list[str]) -> list[str]:
    return [line for lab in labels for line in (f"> **WARNING — {lab}.** {WARNING_TEXT}", "")]
