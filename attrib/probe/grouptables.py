"""Report tables per group of unknown generators (the paper's OSMA splits: ``seed``, ``arch``, ``dataset``).

A split that names groups of unknown generators gives each result line a ``groups`` field: the open-set
metrics of each group's unknown test images against all known test images, and of ``all``. POSE and the
paper report one table per group, because the groups measure different things (a new seed of a known
architecture is much harder to reject than a new architecture); this module writes those tables into
``table.md`` and ``groups.csv``. Methods are aggregated as in the main table (mean ± std over the runs
that have the group, in %).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from attrib.probe.report import _write_csv
from attrib.probe.tables import GROUP, NAMES, cell, markdown, shots_cell

GROUP_METRICS = ("auroc", "fpr95", "aupr_in", "aupr_out", "oscr", "auroc_paper", "oscr_paper", "tnr95_paper")
GROUPS_CSV = "groups.csv"


def group_names(rows: list[dict[str, Any]]) -> list[str]:
    """The unknown groups the runs report, in first-seen order, ``all`` last."""
    seen = dict.fromkeys(g for row in rows for r in row["_runs"] for g in (r.get("groups") or {}))
    return [g for g in seen if g != "all"] + (["all"] if "all" in seen else [])


def group_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method (a row of :func:`attrib.probe.report.aggregate`) and unknown group: each open-set
    metric's mean and std over the runs that report the group, in %, and the mean number of unknown
    test images (``n_unknown``)."""
    out = []
    for row in rows:
        for g in group_names([row]):
            runs = [r["groups"][g] for r in row["_runs"] if g in (r.get("groups") or {})]
            entry: dict[str, Any] = {**{k: row[k] for k in GROUP}, "group": g, "runs": len(runs),
                                     "n_unknown": float(np.mean([m.get("n_unknown", 0) for m in runs]))}
            for m in GROUP_METRICS:
                vals = np.array([np.nan if m_.get(m) is None else m_[m] for m_ in runs], dtype=float) * 100
                ok = vals[~np.isnan(vals)]
                entry[m] = float(ok.mean()) if ok.size else float("nan")
                entry[m + "_std"] = float(ok.std()) if ok.size else float("nan")
            entry["_shots_cell"] = shots_cell(row)
            out.append(entry)
    return out


def group_section(rows: list[dict[str, Any]], out_dir: Path, label: str, main_metrics: tuple[str, ...],
                  paths: dict[str, Path]) -> list[str]:
    """Write ``groups.csv`` and return the ``table.md`` section (one table per group), recording the CSV
    in ``paths``; when no run has groups, nothing (and a stale ``groups.csv`` is removed)."""
    grows = group_rows(rows)
    if not grows:
        (out_dir / GROUPS_CSV).unlink(missing_ok=True)
        return []
    paths["groups_csv"] = _write_csv(out_dir / GROUPS_CSV, grows, list(GROUP) + [
        "group", "runs", "n_unknown"] + [x for m in GROUP_METRICS for x in (m, m + "_std")], label)
    metrics = [m for m in main_metrics if m in GROUP_METRICS]
    metrics += [m for m in ("fpr95",) if m not in metrics and "auroc" in metrics]
    md = ["", "## Unknown groups", "",
          "Open-set metrics of each group of unknown generators alone (all known test images against that "
          "group's unknown ones), as POSE and the paper report them; `all` = every unknown generator (the main "
          f"table's numbers). Mean ± std over runs, in %; every metric is in `{GROUPS_CSV}`."]
    params = any(r.get("params") for r in grows)
    head = ["layer", "head", "score", "shots", "protocol"] + (["params"] if params else []) + [
        "runs", "unknown images"] + [NAMES.get(m, m) for m in metrics]
    for g in group_names(rows):
        body = []
        for r in (r for r in grows if r["group"] == g):
            cells = [r["layer"], r["head"], r["score"], r["_shots_cell"], r["protocol"]]
            cells += ([r.get("params") or "default"] if params else []) + [str(r["runs"]), f"{r['n_unknown']:.0f}"]
            body.append(cells + [cell(r[m], r[m + "_std"]) for m in metrics])
        md += ["", f"### {g}", "", markdown(head, body)]
    return md


__all__ = ["GROUP_METRICS", "GROUPS_CSV", "group_names", "group_rows", "group_section"]
