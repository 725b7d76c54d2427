"""``attrib report RESULTS``: every table and figure of a study, and ``report.html``, one page with all.

What it writes into the results folder (or ``--out``):

- from the result lines alone: ``table.md``, ``table.csv``, ``per_unknown.csv``, ``metrics_by_layer.png``,
  ``metrics_by_shots.png`` (several shots values), ``confusion.png`` and ``per_unknown.png`` (the best
  method: the highest mean OSCR);
- from the per-sample scores a study saved (``attrib probe --save-scores``): ``roc.png``, ``oscr.png``
  and ``score_distributions.png`` (with a saved head's threshold), and ``feature_map.png`` (t-SNE per
  block) when the feature set the lines name is found;
- ``report.html``, all of the above on one self-contained page.

What cannot be drawn (no saved scores, no feature set) is skipped with a note saying what to do, never
an error: the tables stay right without it. Results computed from random-init features keep their
warning label in every output.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from attrib.choices import DEFAULT_TPR  # what study.DEFAULT_TPR is (a test keeps them equal)
from attrib.output_paths import make_folder
from attrib.probe import html
from attrib.probe.options import StudyError
from attrib.probe.results import read_results
from attrib.probe.tables import (ALL_METRICS, BEST_BY, GROUP, MAIN_DESCRIPTION, MAIN_METRICS, NAMES, aggregate,
                                 best_method, cell, group_value, markdown, method_key, method_name,
                                 per_unknown, shots_notes, table_cells, warning_labels, warnings_md)
from attrib.probe.tables import markdown_table  # noqa: F401  (re-exported: report.markdown_table is used)

HTML_NAME = "report.html"
# key -> (file, caption); the order of the page
FIGURES = {
    "plot_layers": ("metrics_by_layer.png", "Every metric by block (counted from 1), mean ± std over splits and "
                    "seeds."),
    "plot_shots": ("metrics_by_shots.png", "Every metric by training images per class."),
    "plot_roc": ("roc.png", "ROC curves of the best method, known images = positives; the red dot is the 95% TPR "
                 "operating point."),
    "plot_oscr": ("oscr.png", "OSCR curves of the best method: known images accepted and correctly classified "
                  "against unknown images accepted; the red dot is the 95% TPR operating point."),
    "plot_scores": ("score_distributions.png", "Open-set score of the known test images and of each unknown "
                    "generator; the dashed red line is a saved head's threshold, where there is one."),
    "plot_unknown": ("per_unknown.png", "AUROC per unknown generator of the best method, and the known class "
                     "it is most mistaken for."),
    "plot_confusion": ("confusion.png", "Confusion of the best method, % of each row; below the red line, the "
                       "known class each unknown generator's images were assigned to."),
    "plot_map": ("feature_map.png", "t-SNE of test features per block, coloured by source; x marks unknown "
                 "generators."),
}


@dataclass
class Report:
    """What :func:`write_report` wrote; ``main`` is the main table as Markdown, warnings included;
    ``notes`` say what was skipped and why."""

    paths: dict[str, Path] = field(default_factory=dict)
    main: str = ""
    labels: list[str] = field(default_factory=list)
    highlight: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class ReportInputs:
    """Where a report finds what lies outside ``results.jsonl`` (see :mod:`attrib.probe.report_inputs`)."""

    cache: str | os.PathLike | None = None  # searched for the feature sets named by the lines
    features: Iterable[str | os.PathLike] = ()  # feature-set folders given by hand
    heads: Iterable[str | os.PathLike] = ()  # saved heads given by hand (RESULTS/*/head.json is found)
    map_per_source: int = 100  # test images per source in the feature map; 0: no map


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


def _unknown_cells(unk: list[dict]) -> tuple[list[str], list[list[str]]]:
    head = ["generator", "runs", "AUROC", "mistaken for", "% of its images"]
    return head, [[u["generator"], str(u["runs"]), cell(u["auroc"], u["auroc_std"]), u["mistaken_for"],
                   f"{u['fraction']:.1f}"] for u in unk]


def _values(results: list[dict], key: str) -> str:
    vals = [r.get(key) for r in results]
    flat = [", ".join(map(str, v)) if isinstance(v, list) else str(v) for v in vals if v not in (None, "", [])]
    return ", ".join(sorted(dict.fromkeys(flat))) or "-"


def study_config(results: list[dict[str, Any]], results_dir: Path) -> list[tuple[str, str]]:
    """The study's configuration as the result lines record it, for the page's last section."""
    from attrib.probe.plotkit import block_label
    from attrib.probe.tables import layer_sort

    layers = sorted({str(r["layer"]) for r in results}, key=layer_sort)
    splits: dict[str, dict] = {}
    for r in results:
        splits.setdefault(str(r["split"]), r)
    out = [("results", str(results_dir.resolve() / "results.jsonl")), ("result lines", str(len(results))),
           ("feature set (train)", _values(results, "features") if any("features" in r for r in results)
            else _values(results, "feature_set")),
           ("feature set (test)", _values(results, "eval_features") if any("eval_features" in r for r in results)
            else _values(results, "feature_set")),
           ("feature identity (train)", _values(results, "feature_hash")),
           ("feature identity (test)", _values(results, "eval_feature_hash")
            if any("eval_feature_hash" in r for r in results) else _values(results, "feature_hash")),
           ("label", _values(results, "label")), ("protocol", _values(results, "protocol")),
           ("--param", ", ".join(sorted({group_value(r, "params") or "defaults" for r in results}))),
           ("layers (0-based)", ", ".join(layers)),
           ("blocks (counted from 1)", ", ".join(block_label(la, short=True) for la in layers)),
           ("heads", _values(results, "head")), ("scores", _values(results, "score")),
           ("shots", _values(results, "shots")), ("seeds", _values(results, "seed"))]
    for name in sorted(splits, key=lambda s: (len(s), s)):
        r = splits[name]
        n = r.get("n") or {}
        sizes = ", ".join(f"{k} {v}" for k, v in n.items() if isinstance(v, int))
        out.append((f"split {name}", f"known: {', '.join(r.get('known') or [])}; unknown: "
                    f"{', '.join(r.get('unknown') or [])}" + (f"; images: {sizes}" if sizes else "")))
    cfg = next((r.get("config") for r in results if r.get("config")), None) or {}
    if cfg.get("path"):
        p = cfg["path"]
        out.append(("hyperparameter path", f"{p['param']}: {p['n']} values {p['min']:g}..{p['max']:g}"))
    out += [("operating point", f"{100 * float(cfg.get('tpr', DEFAULT_TPR)):g}% TPR of known images"),
            ("attrib", _values(results, "attrib"))]
    return out


# ------------------------------------------------------------------------------------------ report
@dataclass
class _Study:
    """A study as the report's writers need it: the lines, the methods, the best one and the conventions."""

    results_dir: Path
    results: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    metrics: str  # --metrics: standard | paper

    def __post_init__(self) -> None:
        self.best = best_method(self.rows, BEST_BY[self.metrics])
        self.unknown = per_unknown(self.rows)  # every method: per_unknown.csv; the best one's: its table
        self.best_unknown = [u for u in self.unknown if all(u[k] == self.best[k] for k in GROUP)]
        # (header, cells) of the main and all-metrics tables: table.md, report.html and the console share them
        self.main_cells = table_cells(self.rows, self.main_metrics)
        self.all_cells = table_cells(self.rows, ALL_METRICS, hparams=True)
        n_splits = len({str(r["split"]) for r in self.results})
        n_seeds = len({int(r["seed"]) for r in self.results})
        self.runs = f"{n_splits} split(s) x {n_seeds} seed(s)"
        self.conventions = f"Metrics: {self.metrics} — {MAIN_DESCRIPTION[self.metrics]}."
        self.intro = (f"Mean ± std (population, over runs) over {self.runs}, in %. Layers are 0-based block indices "
                      "(figures count blocks from 1); `clean` = hyperparameters chosen on known-class validation data "
                      "only, `paper` = training classes balanced by cycling and hyperparameters chosen by validation "
                      "auroc_paper against the unknown generators (the paper's code; optimistic). "
                      f"{self.conventions}")

    @property
    def main_metrics(self) -> tuple[str, ...]:
        return MAIN_METRICS[self.metrics]

    @property
    def best_by(self) -> str:
        return NAMES[BEST_BY[self.metrics]]


def write_report(results_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, metrics: str = "standard",
                 inputs: ReportInputs | None = None) -> Report:
    """Write the tables, the figures and report.html; return what was written (and what was skipped).

    ``metrics``: the conventions of the main table, ``standard`` or ``paper`` (:data:`MAIN_METRICS`); the
    highlighted (best) method is the one with the best mean OSCR under the same conventions.
    """
    from attrib.probe import plots

    if metrics not in MAIN_METRICS:
        raise StudyError(f"--metrics {metrics!r}: use one of {', '.join(MAIN_METRICS)}")
    results_dir = Path(results_dir)
    out_dir = make_folder(out_dir or results_dir, "--out", StudyError)
    inputs = inputs or ReportInputs()
    results = read_results(results_dir)
    rep = Report(labels=warning_labels(results))
    if not results:
        raise StudyError(f"{results_dir}: results.jsonl has no finished lines yet")
    study = _Study(results_dir, results, aggregate(results), metrics)
    rows, best = study.rows, study.best
    rep.highlight = method_name(best)
    label = "; ".join(rep.labels)
    rep.paths["csv"] = _write_csv(out_dir / "table.csv", rows, list(GROUP) + [
        "train_per_class", "n_runs", "splits", "seeds", "hparams"] + [x for m in ALL_METRICS for x in (m, m + "_std")],
        label, {"metrics": metrics})
    rep.paths["per_unknown_csv"] = _write_csv(out_dir / "per_unknown.csv", study.unknown, list(GROUP) + [
        "generator", "runs", "auroc", "auroc_std", "mistaken_for", "fraction"], label)

    made = {"plot_layers": plots.plot_by_layer(rows, out_dir / FIGURES["plot_layers"][0], rep.labels),
            "plot_shots": plots.plot_by_shots(rows, out_dir / FIGURES["plot_shots"][0], rep.labels),
            "plot_confusion": plots.plot_confusion(best, out_dir / FIGURES["plot_confusion"][0], rep.labels),
            "plot_unknown": plots.plot_per_unknown(study.best_unknown, best, out_dir / FIGURES["plot_unknown"][0],
                                                   rep.labels)}
    made.update(_score_figures(study, out_dir, inputs, rep))
    for key, (name, _) in FIGURES.items():
        if made.get(key) is None:  # drop a stale figure this study no longer makes
            (out_dir / name).unlink(missing_ok=True)
        else:
            rep.paths[key] = made[key]

    rep.main = "\n".join(warnings_md(rep.labels) + [
        f"Mean ± std over {study.runs}, in %. Layers are 0-based block indices. {study.conventions}", "",
        *shots_notes(rows), markdown(*study.main_cells)])
    rep.paths["markdown"] = _write_markdown(out_dir / "table.md", study, rep)
    rep.paths["html"] = _write_page(out_dir, study, rep)
    rep.paths = {"markdown": rep.paths.pop("markdown"), **rep.paths}
    return rep


def _score_figures(study: _Study, out_dir: Path, inputs: ReportInputs, rep: Report) -> dict[str, Path | None]:
    """ROC, OSCR, score distributions and the feature map: the figures made from saved scores."""
    from attrib.probe import curves
    from attrib.probe.report_inputs import find_saved_heads, load_scores, scores_by_split

    results_dir, results, best = study.results_dir, study.results, study.best
    if not any(r.get("scores_file") for r in results):
        rep.notes.append("ROC and OSCR curves, score distributions and feature maps need the per-sample scores: "
                         "rerun the study with `attrib probe ... --save-scores` (finished lines are not redone "
                         "into the same --out; use a new one)")
        return {}
    loaded: dict = {}   # scores files read so far: a saved head's line is often the best method's
    try:
        scores = scores_by_split(results_dir, best["_runs"], loaded)
    except StudyError as exc:
        rep.notes.append(f"curves skipped: {exc}")
        return {}
    if not scores:
        rep.notes.append(f"the best method ({rep.highlight}) has no saved scores: no curves")
        return {}
    tpr = float((best["_runs"][0].get("config") or {}).get("tpr", DEFAULT_TPR))
    out: dict[str, Path | None] = {
        "plot_roc": curves.plot_roc(scores, best, out_dir / FIGURES["plot_roc"][0], rep.labels, tpr),
        "plot_oscr": curves.plot_oscr(scores, best, out_dir / FIGURES["plot_oscr"][0], rep.labels, tpr)}
    heads, notes = find_saved_heads(results_dir, inputs.heads)
    rep.notes += notes
    dist, methods, thresholds = dict(scores), {s: best for s in scores}, {}
    by_key = {tuple(r[k] for k in GROUP): r for r in study.rows}
    for head in heads:  # a split with a saved head shows that head's own scores and threshold
        line = next((r for r in results if head.matches(r)), None)
        try:
            sc = load_scores(results_dir, line, loaded) if line is not None else None
        except StudyError as exc:
            rep.notes.append(f"saved head {head.path}: {exc}")
            continue
        if sc is None:
            rep.notes.append(f"saved head {head.path} (split {head.split}, layer {head.layer}, {head.head}+"
                             f"{head.score}, shots {head.shots}) matches no result line with saved scores: its "
                             "threshold is not drawn")
            continue
        dist[head.split], thresholds[head.split], methods[head.split] = sc, head, by_key[method_key(line)]
    out["plot_scores"] = curves.plot_score_distributions(dist, methods, out_dir / FIGURES["plot_scores"][0],
                                                         rep.labels, thresholds)
    out["plot_map"] = _feature_map(study, scores, inputs, out_dir, rep)
    return out


def _feature_map(study: _Study, scores: dict, inputs: ReportInputs, out_dir: Path, rep: Report) -> Path | None:
    """t-SNE panels of the first split's test images, one per layer the best method's head ran on."""
    from attrib.probe.featuremap import plot_feature_maps
    from attrib.probe.plots import split_order
    from attrib.probe.report_inputs import find_test_features
    from attrib.probe.tables import layer_sort

    if inputs.map_per_source <= 0:
        return None
    sc = scores[split_order(scores)[0]]
    others = [i for i, k in enumerate(GROUP) if k != "layer"]  # the same method at every layer
    same = [study.best[GROUP[i]] for i in others]
    layers = sorted({str(r["layer"]) for r in study.results if str(r["split"]) == sc.split and
                     [method_key(r)[i] for i in others] == same}, key=layer_sort)
    fs, note = find_test_features(sc.line, inputs.cache, inputs.features)
    if fs is None:
        rep.notes.append(f"feature map skipped: {note}")
        return None
    path, note = plot_feature_maps(sc, layers, fs, out_dir / FIGURES["plot_map"][0], rep.labels,
                                   inputs.map_per_source)
    if note:
        rep.notes.append(note)
    return path


def _write_markdown(path: Path, study: _Study, rep: Report) -> Path:
    from attrib.probe.results import evaluated_on

    fsets = sorted({r["feature_set"] for r in study.results})
    evals = sorted({evaluated_on(r)[0] for r in study.results})
    md = [f"# attrib results: {study.results_dir}", ""] + warnings_md(rep.labels) + [
        f"Feature set(s): {', '.join(fsets)}", "",
        "Validation and test images read from (`--eval-features`): " +
        (", ".join(evals) if evals != fsets else "the same feature set(s)"), ""]
    md += [f"> note: {n}" for n in rep.notes] + [""] * bool(rep.notes) + [
        "## Main table", "", study.intro, "",
        *shots_notes(study.rows), markdown(*study.main_cells), "",
        "## All metrics", "",
        "`chosen` = the path hyperparameter each run selected (median [range] over runs). FPR@95TPR: lower is "
        "better. The `(paper)` columns are the same quantities with the paper's code's conventions.", "",
        markdown(*study.all_cells), "",
        "## Unknown generators", "",
        f"For `{rep.highlight}` (the method with the highest mean {study.best_by}); every method is in "
        "`per_unknown.csv`. AUROC of all known test images against that generator's; *mistaken for* = the known "
        "class the head assigns most of its images to.", "",
        markdown(*_unknown_cells(study.best_unknown)), ""]
    from attrib.probe.grouptables import group_section  # it imports this module's CSV writer

    md += group_section(study.rows, path.parent, "; ".join(rep.labels), study.main_metrics, rep.paths)
    md += ["", "## Files", ""] + [f"- `{p.name}`" for p in rep.paths.values()] + [f"- `{HTML_NAME}`", ""]
    path.write_text("\n".join(md))
    return path


def _write_page(out_dir: Path, study: _Study, rep: Report) -> Path:
    best_i = next(i for i, r in enumerate(study.rows) if r is study.best)
    page = html.Page(
        title=f"attrib report: {study.results_dir.resolve().name}", labels=rep.labels, intro=study.intro,
        notes=rep.notes,
        tables=[html.Table("Main table", f"Best method (highest mean {study.best_by}, in bold): {rep.highlight}.",
                           *study.main_cells, highlight=best_i),
                html.Table("Unknown generators", f"For {rep.highlight}: AUROC of all known test images against "
                           "each generator's, and the known class the head assigns most of its images to.",
                           *_unknown_cells(study.best_unknown)),
                html.Table("All metrics", "chosen = the path hyperparameter each run selected (median [range] over "
                           "runs). FPR@95TPR: lower is better. The (paper) columns are the same quantities with the "
                           "paper's code's conventions.", *study.all_cells,
                           highlight=best_i)],
        figures=[html.Figure(FIGURES[k][1], rep.paths[k]) for k in FIGURES if k in rep.paths],
        config=study_config(study.results, study.results_dir),
        files=[p for k, p in rep.paths.items() if not k.startswith("plot_")])
    return html.write_html(page, out_dir / HTML_NAME)
