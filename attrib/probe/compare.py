"""``attrib report --compare A B ...``: one table and one figure setting studies side by side.

Why: the questions a replication asks are comparisons — clean vs paper protocol, the model's vs the
paper's preprocessing, clean vs perturbed test images — each answered by two results folders. The
table gives each study's mean ± std and the difference of each later study to the first (B - A, in
percentage points, from the unrounded means).

Methods are matched by (layer, head, score, shots, protocol), except for a field that is what the
studies differ in: one value in each study and not the same in all (e.g. protocol ``clean`` in A,
``paper`` in B). That field is dropped from the match and named in the study's column header, so
clean and paper lines of the same layer face each other. A method missing from a study is ``n/a``.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from attrib.output_paths import make_folder
from attrib.probe import html, plotkit
from attrib.probe.options import StudyError
from attrib.probe.results import read_results
from attrib.probe.tables import (GROUP, MAIN_DESCRIPTION, MAIN_METRICS, NAMES, aggregate, cell, layer_sort, markdown,
                                 shots_sort, warning_labels, warnings_md)


@dataclass
class Study:
    name: str
    path: Path
    rows: list[dict[str, Any]]
    labels: list[str]


@dataclass
class Comparison:
    """What :func:`compare_studies` wrote; ``table`` is the Markdown table it printed."""

    studies: list[Study]
    fields: list[str]  # the fields methods are matched by
    varying: dict[str, list[str]]  # field -> each study's value, for the fields the studies differ in
    metrics: tuple[str, ...] = MAIN_METRICS["standard"]  # the metrics compared (--metrics)
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per method: key fields, values, differences
    table: str = ""
    labels: list[str] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)


def _names(paths: Sequence[Path]) -> list[str]:
    """Short study names: the folder names, or the paths as given when two folders share a name."""
    names = [p.resolve().name for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


def _key(row: dict[str, Any], fields: Sequence[str]) -> tuple:
    return tuple(str(row[f]) for f in fields)


def _sort(key: tuple, fields: Sequence[str]) -> tuple:
    d = dict(zip(fields, key))
    return (d.get("protocol", ""), d.get("head", ""), d.get("score", ""), shots_sort(d["shots"]) if "shots" in d
            else (0, 0), layer_sort(d["layer"]) if "layer" in d else (0, 0, ""))


def load_studies(paths: Sequence[str | os.PathLike]) -> list[Study]:
    paths = [Path(p) for p in paths]
    studies = []
    for name, p in zip(_names(paths), paths):
        results = read_results(p)
        if not results:
            raise StudyError(f"{p}: results.jsonl has no finished lines yet")
        studies.append(Study(name, p, aggregate(results), warning_labels(results)))
    return studies


def match_fields(studies: Sequence[Study]) -> tuple[list[str], dict[str, list[str]]]:
    """(fields methods are matched by, {field the studies differ in: each study's value})."""
    varying = {}
    for f in GROUP:
        values = [{str(r[f]) for r in s.rows} for s in studies]
        if all(len(v) == 1 for v in values) and len(set.union(*values)) > 1:
            varying[f] = [next(iter(v)) for v in values]
    unused = {"params"} if not any(r.get("params") for s in studies for r in s.rows) else set()  # all defaults
    return [f for f in GROUP if f not in varying and f not in unused], varying


def compare_rows(studies: Sequence[Study], fields: Sequence[str],
                 metrics: Sequence[str] = MAIN_METRICS["standard"]) -> list[dict[str, Any]]:
    """One row per method found in any study: each study's mean and std of each of ``metrics`` (None when
    it lacks the method) and ``diff_<i>_<metric>`` = study i minus the first (None when either lacks it)."""
    by_study = [{_key(r, fields): r for r in s.rows} for s in studies]
    keys = sorted({k for b in by_study for k in b}, key=lambda k: _sort(k, fields))
    out = []
    for k in keys:
        row: dict[str, Any] = dict(zip(fields, k))
        for i, b in enumerate(by_study):
            for m in metrics:
                r = b.get(k)
                row[f"{m}_{i}"] = None if r is None else r[m]
                row[f"{m}_std_{i}"] = None if r is None else r[m + "_std"]
        for i in range(1, len(studies)):
            for m in metrics:
                a, b = row[f"{m}_0"], row[f"{m}_{i}"]
                row[f"diff_{i}_{m}"] = None if a is None or b is None or np.isnan(a) or np.isnan(b) else b - a
        out.append(row)
    return out


def _diff(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.2f}"


def _cells(cmp: Comparison) -> tuple[list[str], list[list[str]]]:
    letters = [chr(ord("A") + i) for i in range(len(cmp.studies))]
    head = list(cmp.fields)
    for m in cmp.metrics:
        head += [f"{NAMES[m]} {a}" for a in letters]
        head += [f"Δ {NAMES[m]} {a} - A" for a in letters[1:]]
    body = []
    for row in cmp.rows:
        cells = [row[f] for f in cmp.fields]
        for m in cmp.metrics:
            cells += ["n/a" if row[f"{m}_{i}"] is None else cell(row[f"{m}_{i}"], row[f"{m}_std_{i}"])
                      for i in range(len(cmp.studies))]
            cells += [_diff(row[f"diff_{i}_{m}"]) for i in range(1, len(cmp.studies))]
        body.append(cells)
    return head, body


def _legend(cmp: Comparison) -> list[str]:
    """What each letter is: the study's folder, and its value of each field the studies differ in."""
    out = []
    for i, s in enumerate(cmp.studies):
        what = ", ".join(f"{f} {vals[i]}" for f, vals in cmp.varying.items())
        out.append(f"{chr(ord('A') + i)} = {s.name} ({s.path})" + (f": {what}" if what else ""))
    return out


def plot_comparison(cmp: Comparison, path: Path) -> Path:
    """Grouped bars: one panel per paper metric, one group per method, one bar per study (mean ± std)."""
    plt = plotkit.pyplot()
    n, k = len(cmp.rows), len(cmp.studies)
    width = max(8.0, 0.22 * n * k + 0.3 * n + 2.5)
    rows = len(cmp.metrics)
    fig, axes = plt.subplots(rows, 1, figsize=(width, 3.2 * rows + 1.2), squeeze=False)
    x = np.arange(n)
    bar = 0.8 / k
    # a field with one value in every row goes to the title; the ticks name what tells methods apart
    same = [f for f in cmp.fields if len({str(r[f]) for r in cmp.rows}) == 1 and n > 1]
    shown = [f for f in cmp.fields if f not in same]

    def name(r: dict, fields: Sequence[str]) -> str:
        return " / ".join(plotkit.block_label(r[f]) if f == "layer" else f"{f} {r[f]}" if f == "shots" else str(r[f])
                          for f in fields)

    ticks = [name(r, shown) for r in cmp.rows]
    letters = [chr(ord("A") + i) for i in range(k)]
    for ax, m in zip(axes[:, 0], cmp.metrics):
        low = []
        for i in range(k):
            vals = np.array([np.nan if r[f"{m}_{i}"] is None else r[f"{m}_{i}"] for r in cmp.rows], dtype=float)
            errs = np.array([0.0 if r[f"{m}_std_{i}"] is None else r[f"{m}_std_{i}"] for r in cmp.rows], dtype=float)
            ax.bar(x + (i - (k - 1) / 2) * bar, np.nan_to_num(vals), bar, yerr=np.nan_to_num(errs), capsize=2,
                   label=f"{letters[i]}: {cmp.studies[i].name}")
            low += [v for v in vals - errs if not np.isnan(v)]
        ax.set_title(NAMES[m], fontsize=10)
        ax.set_ylabel("%")
        ax.set_xticks(x, ticks, rotation=30 if n > 4 else 0, ha="right" if n > 4 else "center", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.set_xlim(-0.6, n - 0.4)
        ax.set_ylim(max(0.0, 5 * np.floor(min(low, default=0.0) / 5) - 5), None)  # differences stay visible
    axes[0, 0].legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    varying = "; ".join(f"{f}: " + " vs ".join(v) for f, v in cmp.varying.items())
    what = "comparison of studies (mean ± std over splits and seeds)" + (f" — {varying}" if varying else "")
    if same:
        what += "\n" + name(cmp.rows[0], same)
    plotkit.title(fig, what, cmp.labels, fontsize=11)
    fig.tight_layout()
    return plotkit.save(fig, path, [NAMES[m] for m in cmp.metrics], dpi=100, bbox_inches="tight")


def _write_csv(cmp: Comparison, path: Path) -> Path:
    names = [s.name for s in cmp.studies]
    cols = list(cmp.fields)
    for m in cmp.metrics:
        cols += [f"{n}:{m}" for n in names] + [f"{n}:{m}_std" for n in names]
        cols += [f"{n} - {names[0]}:{m}" for n in names[1:]]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols + ["label"])
        fmt = lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.4f}"  # noqa: E731
        for row in cmp.rows:
            vals = [row[fi] for fi in cmp.fields]
            for m in cmp.metrics:
                vals += [fmt(row[f"{m}_{i}"]) for i in range(len(names))]
                vals += [fmt(row[f"{m}_std_{i}"]) for i in range(len(names))]
                vals += [fmt(row[f"diff_{i}_{m}"]) for i in range(1, len(names))]
            w.writerow(vals + ["; ".join(cmp.labels)])
    return path


def default_out(paths: Sequence[str | os.PathLike]) -> Path:
    """``A/compare-B[-C...]``: beside the first study, named for the others."""
    names = _names([Path(p) for p in paths])
    return Path(paths[0]) / ("compare-" + "-".join(re.sub(r"[^\w.+-]+", "_", n) for n in names[1:]))[:120]


def compare_studies(paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike | None = None,
                    metrics: str = "standard") -> Comparison:
    """Write compare.md, compare.csv, compare.png and compare.html for the studies in ``paths``;
    ``metrics``: the conventions compared, as ``attrib report --metrics``."""
    if metrics not in MAIN_METRICS:
        raise StudyError(f"--metrics {metrics!r}: use one of {', '.join(MAIN_METRICS)}")
    if len(paths) < 2:
        raise StudyError("--compare needs at least two results folders (RESULTS_A RESULTS_B ...)")
    out = make_folder(out_dir or default_out(paths), "--out", StudyError)
    studies = load_studies(paths)
    fields, varying = match_fields(studies)
    cmp = Comparison(studies, fields, varying, MAIN_METRICS[metrics],
                     labels=sorted({lab for s in studies for lab in s.labels}))
    cmp.rows = compare_rows(studies, fields, cmp.metrics)
    head, body = _cells(cmp)
    legend = _legend(cmp)
    intro = ("Mean ± std over splits and seeds, in %; Δ = difference of the means, in percentage points. Layers are "
             f"0-based block indices. Metrics: {metrics} — {MAIN_DESCRIPTION[metrics]}.")
    cmp.table = "\n".join(warnings_md(cmp.labels) + [f"- {line}" for line in legend] + ["", intro, "",
                                                                                        markdown(head, body)])
    cmp.paths["markdown"] = out / "compare.md"
    cmp.paths["markdown"].write_text(f"# attrib: comparison of {len(studies)} studies\n\n{cmp.table}\n")
    cmp.paths["csv"] = _write_csv(cmp, out / "compare.csv")
    cmp.paths["plot"] = plot_comparison(cmp, out / "compare.png")
    page = html.Page(title=f"attrib: comparison of {len(studies)} studies", labels=cmp.labels,
                     intro=" · ".join(legend),
                     tables=[html.Table("Comparison", intro, head, body)],
                     figures=[html.Figure("Each paper metric per method, one bar per study.", cmp.paths["plot"])],
                     files=[cmp.paths["markdown"], cmp.paths["csv"]])
    cmp.paths["html"] = html.write_html(page, out / "compare.html")
    return cmp
