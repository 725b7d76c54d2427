"""Aggregate result lines into the paper's table shape: one row per method, mean ± std in %.

A *method* is (layer, head, score, shots, protocol); its numbers are the mean ± std over every split and
seed it ran on, in percent. The std is the population std (ddof=0) over those runs. Results computed
from random-init features keep their warning label in every output: tables, CSV rows and plot titles.

Why apart from the report: the tables are pure arithmetic on result lines (no files, no matplotlib), and
the report, its plots, its HTML page and the comparison of studies all read them.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

PAPER_METRICS = ("accuracy", "auroc", "oscr")
METRICS = ("accuracy", "macro_f1", "auroc", "fpr95", "aupr_in", "aupr_out", "oscr")
NAMES = {"accuracy": "closed-set acc.", "macro_f1": "macro-F1", "auroc": "AUROC", "fpr95": "FPR@95TPR ↓",
         "aupr_in": "AUPR-in", "aupr_out": "AUPR-out", "oscr": "OSCR"}
GROUP = ("layer", "head", "score", "shots", "protocol")


def layer_sort(layer: str) -> tuple:
    return (1, 0, layer) if layer.startswith("concat") else (0, int(layer), "")


def shots_sort(s: str) -> tuple:
    return (1, 0) if s == "all" else (0, int(s))


def method_name(r: dict[str, Any]) -> str:
    return f"{r['layer']} / {r['head']}+{r['score']} / shots {r['shots']} / {r['protocol']}"


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


def aggregate(results: list[dict[str, Any]], metrics: tuple[str, ...] = METRICS) -> list[dict[str, Any]]:
    """One row per method: mean and std over its runs (splits x seeds) of each metric, in %."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        groups[tuple(str(r.get(k, "clean" if k == "protocol" else "")) for k in GROUP)].append(r)
    rows = []
    for key, rs in groups.items():
        row: dict[str, Any] = dict(zip(GROUP, key))
        row["n_runs"] = len(rs)
        row["splits"] = len({str(r["split"]) for r in rs})
        row["seeds"] = len({int(r["seed"]) for r in rs})
        row["hparams"] = _hparams(rs)
        for m in metrics:
            vals = _values(rs, m) * 100
            ok = vals[~np.isnan(vals)]
            row[m] = float(ok.mean()) if ok.size else float("nan")
            row[m + "_std"] = float(ok.std()) if ok.size else float("nan")
        row["_runs"] = rs
        rows.append(row)
    rows.sort(key=lambda r: (r["protocol"], r["head"], r["score"], shots_sort(r["shots"]), layer_sort(r["layer"])))
    return rows


def cell(mean: float, std: float) -> str:
    return "n/a" if np.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


def table_cells(rows: list[dict[str, Any]], metrics: tuple[str, ...] = PAPER_METRICS,
                hparams: bool = False) -> tuple[list[str], list[list[str]]]:
    """(header, cells) of the methods table: the one shape Markdown and HTML both render."""
    head = ["layer", "head", "score", "shots", "protocol", "runs"] + (["chosen"] if hparams else [])
    head += [NAMES.get(m, m) for m in metrics]
    body = []
    for r in rows:
        cells = [r["layer"], r["head"], r["score"], r["shots"], r["protocol"], str(r["n_runs"])]
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


def best_method(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The method with the highest mean OSCR (the first of equals; a method without OSCR last)."""
    best = max(range(len(rows)), key=lambda i: (np.nan_to_num(rows[i]["oscr"], nan=-1.0), -i))
    return rows[best]


def warning_labels(results: list[dict[str, Any]]) -> list[str]:
    """The distinct random-init warning labels of the result lines ('' = real weights, no label)."""
    return sorted({r.get("label", "") for r in results if r.get("label")})


WARNING_TEXT = "These numbers come from untrained weights and say nothing about CLIP."


def warnings_md(labels: list[str]) -> list[str]:
    return [line for lab in labels for line in (f"> **WARNING — {lab}.** {WARNING_TEXT}", "")]
