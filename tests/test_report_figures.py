"""Report figures and pages: ROC / OSCR curves, score distributions, feature maps, per-unknown bars,
report.html (also in a real headless browser), and `attrib report --compare`.

Figures are checked by what they hold: the panel titles each PNG records in its metadata (read back
with Pillow), the figure's own axes (kept by patching plt.close), and image sizes.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import attrib.probe.metrics as M
from attrib.cli import main
from attrib.probe import plotkit
from attrib.probe.html import missing_references, references
from attrib.probe.options import StudyError
from attrib.probe.plotkit import read_panels
from attrib.probe.report import ReportInputs, write_report
from attrib.probe.tables import aggregate
from report_fixtures import LABEL, write_study
from synthetic_features import make_feature_set


@pytest.fixture()
def kept_figures(monkeypatch) -> list:
    """Figures the code under test closes, kept open to be inspected."""
    plt = plotkit.pyplot()
    close = plt.close
    figures: list = []
    monkeypatch.setattr(plt, "close", figures.append)
    yield figures
    for fig in figures:
        close(fig)


# ------------------------------------------------------------------------------------------ metrics
def test_oscr_curve_by_hand_and_its_area_is_oscr() -> None:
    known, correct, unknown = [0.9, 0.8, 0.7], [True, False, True], [0.85, 0.1]
    fpr, ccr, thr = M.oscr_curve(known, correct, unknown)
    # thresholds 0.9, 0.85, 0.8, 0.7, 0.1: correct known accepted 1, 1, 1, 2, 2 of 3; unknown 0, 1, 1, 1, 2 of 2
    assert thr.tolist() == [np.inf, 0.9, 0.85, 0.8, 0.7, 0.1]
    assert np.allclose(ccr, [0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3]) and np.allclose(fpr, [0, 0, 0.5, 0.5, 0.5, 1])
    assert np.trapezoid(ccr, fpr) == pytest.approx(M.oscr(known, correct, unknown)) == pytest.approx(0.5)
    at = M.rates_at_threshold(known, correct, unknown, 0.8)
    assert at == {"tpr": pytest.approx(2 / 3), "ccr": pytest.approx(1 / 3), "fpr": pytest.approx(0.5)}
    rng = np.random.default_rng(0)
    k, u = rng.normal(1, 1, 50).round(1), rng.normal(0, 1, 40).round(1)  # rounded: ties
    c = rng.random(50) > 0.2
    fpr, ccr, _ = M.oscr_curve(k, c, u)
    assert np.trapezoid(ccr, fpr) == pytest.approx(M.oscr(k, c, u), abs=1e-12)
    assert ccr[-1] == pytest.approx(c.mean()) and fpr[-1] == 1.0
    with pytest.raises(ValueError, match="1 correctness flags for 2 known scores"):
        M.oscr_curve([0.1, 0.2], [True], [0.3])


# ----------------------------------------------------------------------------------------- plotkit
def test_blocks_are_counted_from_one_and_grids_stay_compact() -> None:
    assert plotkit.block_label("7") == "block 8" and plotkit.block_label("7", short=True) == "8"
    assert plotkit.block_label("concat:9,10,11") == "blocks 10+11+12"
    assert plotkit.method_title({"layer": "0", "head": "logreg", "score": "msp", "shots": "all"}) == \
        "block 1 / logreg+msp / shots all / clean"
    assert [plotkit.grid_shape(n) for n in (1, 2, 3, 4, 5, 6, 7)] == [(1, 1), (1, 2), (1, 3), (2, 2), (2, 3), (2, 3),
                                                                     (3, 3)]
    assert plotkit.grid_shape(12, max_cols=4) == (3, 4)


# ---------------------------------------------------------------- the figures of result lines alone
def _rows(tmp_path: Path, **kw) -> list[dict]:
    from attrib.probe.results import read_results

    return aggregate(read_results(write_study(tmp_path / "study", scores=False, **kw)))


def test_layer_plot_keeps_concatenated_blocks_and_names_every_tick(tmp_path: Path, kept_figures) -> None:
    """Issue 15, item 13: concat layers were dropped, and one layer showed fractional ticks."""
    from attrib.probe.plots import plot_by_layer

    path = plot_by_layer(_rows(tmp_path, layers=("0", "1", "2", "concat:1,2")), tmp_path / "a.png", [LABEL])
    fig = kept_figures[-1]
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == ["1", "2", "3", "2+3"]
    assert [len(ax.lines) > 0 for ax in fig.axes[:7]] == [True] * 7
    assert fig._suptitle.get_color() == "red" and LABEL in fig._suptitle.get_text()
    assert read_panels(path)[:3] == ["closed-set acc.", "macro-F1", "AUROC"] and len(read_panels(path)) == 7
    plot_by_layer(_rows(tmp_path / "one", layers=("7",)), tmp_path / "b.png", [])
    ax = kept_figures[-1].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["8"] and list(ax.get_xticks()) == [8.0]
    assert kept_figures[-1]._suptitle.get_color() == "black"


def test_confusion_of_five_splits_is_a_readable_grid_titled_from_block_one(tmp_path: Path, kept_figures) -> None:
    """Issue 15, item 13: 5 splits made a 2420x572 strip, titled with the 0-based layer."""
    from attrib.probe.plots import plot_confusion
    from attrib.probe.tables import best_method

    rows = _rows(tmp_path, splits=tuple("12345"), layers=("7",))
    path = plot_confusion(best_method(rows), tmp_path / "c.png", [LABEL])
    assert read_panels(path) == [f"split {s} (1 seed)" for s in "12345"]
    fig = kept_figures[-1]
    assert "block 8 / logreg+msp" in fig._suptitle.get_text() and " 7 /" not in fig._suptitle.get_text()
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == 5 and len({round(ax.get_position().y0, 3) for ax in panels}) == 2  # two rows
    with Image.open(path) as im:
        w, h = im.size
    assert w < 2 * h and w <= 2000  # a grid, not a strip
    texts = [t for ax in panels for t in ax.texts]
    assert len(texts) == 5 * 8 * 4 and min(t.get_fontsize() for t in texts) >= 8


def test_per_unknown_bars(tmp_path: Path, kept_figures) -> None:
    from attrib.probe.plots import plot_per_unknown
    from attrib.probe.tables import GROUP, best_method, per_unknown

    rows = _rows(tmp_path, splits=("1", "2"))
    best = best_method(rows)
    unk = [u for u in per_unknown(rows) if all(u[k] == best[k] for k in GROUP)]
    path = plot_per_unknown(unk, best, tmp_path / "u.png", [])
    assert read_panels(path) == ["AUROC per unknown generator"]
    ax = kept_figures[-1].axes[0]
    assert len(ax.patches) == len(unk) == 5  # split 1's 4 unknown generators and split 2's, 5 distinct
    shown = {t.get_text() for t in ax.texts}
    for u in unk:
        assert f"{u['auroc']:.1f}  mistaken for {u['mistaken_for']} ({u['fraction']:.0f}%)" in shown
    assert plot_per_unknown([], best, tmp_path / "none.png", []) is None


# ---------------------------------------------------------------------------- figures from scores
def test_roc_and_oscr_legends_are_the_result_lines_numbers(tmp_path: Path, kept_figures) -> None:
    from attrib.probe.curves import plot_oscr, plot_roc
    from attrib.probe.report_inputs import scores_by_split
    from attrib.probe.tables import best_method

    res = write_study(tmp_path / "s", splits=("1", "2", "3"), layers=("0", "5"), seeds=(0, 1))
    from attrib.probe.results import read_results

    best = best_method(aggregate(read_results(res)))
    scores = scores_by_split(res, best["_runs"])
    assert sorted(scores) == ["1", "2", "3"] and all(sc.line["seed"] == 0 for sc in scores.values())
    path = plot_roc(scores, best, tmp_path / "roc.png", [LABEL])
    assert read_panels(path) == [f"split {s} (seed 0)" for s in "123"]
    for ax, s in zip(kept_figures[-1].axes, "123"):
        line = scores[s].line
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert legend[0] == f"AUROC {100 * line['auroc']:.2f}"
        assert legend[2] == f"95% TPR: FPR {100 * line['fpr95']:.1f}%"  # the operating point is the table's
        dot = ax.lines[2]
        assert dot.get_xdata()[0] == pytest.approx(line["fpr95"]) and dot.get_ydata()[0] >= 0.95
    path = plot_oscr(scores, best, tmp_path / "oscr.png", [LABEL])
    assert len(read_panels(path)) == 3
    for ax, s in zip(kept_figures[-1].axes, "123"):
        assert ax.get_legend().get_texts()[0].get_text() == f"OSCR {100 * scores[s].line['oscr']:.2f}"


def _save_real_head(folder: Path, fs, split: str, layer: tuple[int, ...], threshold: float) -> Path:
    from attrib.probe.heads import HEADS
    from attrib.probe.persist import save_head
    from attrib.probe.scorers import SCORERS

    X = fs.block(layer[0], np.arange(40))
    y = np.arange(40) % 2
    head = HEADS["logreg"]().fit(X, y)
    scorer = SCORERS["msp"](head=head).fit(X, y)
    return save_head(folder, head, scorer, head_name="logreg", score_name="msp", classes=["real", "deconv"],
                     layer=layer, threshold=threshold, feature_set=fs.id, manifest=fs.manifest, check_X=X[:4],
                     info={"split": {"name": split, "rows": f"rows{split}0"}, "shots": "all", "tpr": 0.95})


@pytest.mark.slow
def test_score_distributions_draw_a_saved_heads_threshold(tmp_path: Path, kept_figures) -> None:
    fs = make_feature_set(tmp_path / "fs", n_val=10)
    res = write_study(tmp_path / "res", fs, splits=("1", "2"), layers=("0", "1", "2"))
    _save_real_head(res / "head", fs, "2", (1,), 0.123)  # found inside the results folder
    _save_real_head(tmp_path / "elsewhere", fs, "1", (0,), 0.5)  # given with --head
    _save_real_head(tmp_path / "other", fs, "1", (0,), 0.7)
    (tmp_path / "other" / "head.json").write_text("{}")  # damaged: a note, not a crash
    rep = write_report(res, inputs=ReportInputs(heads=[tmp_path / "elsewhere", tmp_path / "other"],
                                                map_per_source=0))
    assert any("saved head not used" in n and "other" in n for n in rep.notes)
    titles = read_panels(rep.paths["plot_scores"])
    assert titles == ["split 1 (seed 0)\nblock 1 / logreg+msp / shots all / clean",
                      "split 2 (seed 0)\nblock 2 / logreg+msp / shots all / clean"]
    fig = next(f for f in kept_figures if f._suptitle is not None and "open-set score" in f._suptitle.get_text())
    for ax, t in zip(fig.axes, (0.5, 0.123)):
        legend = [x.get_text() for x in ax.get_legend().get_texts()]
        assert legend[-1] == f"saved head's threshold {t:.4g}" and ax.lines[-1].get_xdata()[0] == t
        assert legend[0].startswith("known (") and len(legend) == 1 + 4 + 1  # known, 4 unknown generators, threshold
    # a head of a line that is not in the results: said, and no threshold drawn
    shutil.rmtree(tmp_path / "elsewhere")
    _save_real_head(tmp_path / "elsewhere", fs, "1", (2,), 0.5)
    (res / "results.jsonl").write_text("".join(ln for ln in (res / "results.jsonl").read_text().splitlines(True)
                                               if '"layer": "2"' not in ln))
    rep = write_report(res, inputs=ReportInputs(heads=[tmp_path / "elsewhere"], map_per_source=0))
    assert any("matches no result line with saved scores" in n for n in rep.notes)


@pytest.mark.slow
def test_figures_that_need_scores_or_features_are_skipped_with_a_note(tmp_path: Path) -> None:
    fs = make_feature_set(tmp_path / "fs", n_val=10)
    res = write_study(tmp_path / "plain", fs, splits=("1",), layers=("2",), scores=False)
    rep = write_report(res)
    assert not {"plot_roc", "plot_oscr", "plot_scores", "plot_map"} & set(rep.paths)
    assert any("--save-scores" in n for n in rep.notes) and "--save-scores" in rep.paths["html"].read_text()
    res = write_study(tmp_path / "scored", fs, splits=("1",), layers=("2",))
    rep = write_report(res, inputs=ReportInputs(cache=tmp_path / "nowhere", map_per_source=5))
    assert {"plot_roc", "plot_oscr", "plot_scores"} <= set(rep.paths) and "plot_map" not in rep.paths
    assert any(f"feature map skipped: feature set {fs.id} is not under {tmp_path / 'nowhere'}" in n for n in rep.notes)
    # the feature set under --cache, by its id (the folder name the lines record)
    cache = tmp_path / "cache"
    shutil.copytree(fs.path, cache / fs.id)
    rep = write_report(res, inputs=ReportInputs(cache=cache, map_per_source=5))
    assert read_panels(rep.paths["plot_map"]) == ["block 3"] and not rep.notes
    # a damaged scores file (cut short, then junk): named, and the report still has its tables
    scores_file = res / json.loads((res / "results.jsonl").read_text().splitlines()[0])["scores_file"]
    for damage in (scores_file.read_bytes()[:200], b"junk"):
        scores_file.write_bytes(damage)
        rep = write_report(res, inputs=ReportInputs(map_per_source=0))
        assert any("unreadable scores file" in n and "--save-scores" in n for n in rep.notes)
        assert "plot_roc" not in rep.paths and not (res / "roc.png").exists() and rep.paths["csv"].exists()



def test_a_scores_file_that_breaks_the_contract_is_named(tmp_path: Path) -> None:
    from attrib.probe.report_inputs import load_scores

    res = write_study(tmp_path / "res", splits=("1",), layers=("2",))
    line = json.loads((res / "results.jsonl").read_text().splitlines()[0])
    path = res / line["scores_file"]
    good = dict(np.load(path))
    assert load_scores(res, line).s_known.tolist() == good["s_known"].tolist()
    assert load_scores(res, {**line, "scores_file": None}) is None  # a line without saved scores
    for change, why in (({"y_true": None}, "no y_true"), ({"s_known": good["s_known"].astype(str)}, "s_known is <U"),
                        ({"y_pred": good["y_pred"][:-1]}, "lengths differ: y_true 48, y_pred 47"),
                        ({"y_true": good["y_true"] + 10}, "labels beyond the 4 classes")):
        arrays = {k: v for k, v in {**good, **change}.items() if v is not None}
        np.savez(path, **arrays)
        with pytest.raises(StudyError, match=re.escape(why)):
            load_scores(res, line)
    path.unlink()
    with pytest.raises(StudyError, match="is missing; rerun the study with `attrib probe ... --save-scores`"):
        load_scores(res, line)


def test_feature_map_reads_the_sampled_test_images(tmp_path: Path, kept_figures) -> None:
    from attrib.probe.featuremap import plot_feature_maps, read_features, sample_sources
    from attrib.probe.report_inputs import load_scores

    fs = make_feature_set(tmp_path / "fs", n_val=10)
    res = write_study(tmp_path / "res", fs, splits=("1",), layers=("0", "1", "2", "concat:0,2"))
    line = json.loads((res / "results.jsonl").read_text().splitlines()[0])
    sc = load_scores(res, line)
    paths, sources, unknown = sample_sources(sc, per_source=4, seed=0)
    assert len(paths) == 8 * 4 and sources.count("real") == 4 and sum(unknown) == 4 * 4
    assert sample_sources(sc, per_source=4, seed=0)[0] == paths != sample_sources(sc, per_source=4, seed=1)[0]
    assert all(fs.images.sources[fs.images.index(p)] == s for p, s in zip(paths, sources))
    X = read_features(fs, paths, "concat:0,2")
    rows = fs.rows(paths)
    assert np.array_equal(X, np.concatenate([fs.block(0, rows), fs.block(2, rows)], axis=1))
    path, note = plot_feature_maps(sc, ["0", "1", "2", "concat:0,2"], fs, tmp_path / "m.png", [LABEL], per_source=4)
    assert not note and read_panels(path) == ["block 1", "block 2", "block 3", "blocks 1+3"]
    fig = kept_figures[-1]
    (ax0, *_) = fig.axes
    assert len(ax0.collections) == 8 and sum(len(c.get_offsets()) for c in ax0.collections) == 32
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[0] == "real" and legend[-1].endswith("(unknown)") and sum("(unknown)" in t for t in legend) == 4
    other = make_feature_set(tmp_path / "other", n_val=3)  # lacks most of the test images
    path, note = plot_feature_maps(sc, ["0"], other, tmp_path / "n.png", [], per_source=4)
    assert path is None and f"the test images are not all in {other.id}: " in note and "path(s) not in" in note


# -------------------------------------------------------------------------------- the whole report
@pytest.mark.slow
def test_report_with_scores_has_every_figure_and_a_self_contained_page(tmp_path: Path) -> None:
    fs = make_feature_set(tmp_path / "fs", n_val=10)
    res = write_study(tmp_path / "res", fs, splits=tuple("12345"), layers=("0", "1", "2", "concat:1,2"))
    out = CliRunner().invoke(main, ["report", str(res), "--features", str(fs.path), "--map-per-source", "6"])
    assert out.exit_code == 0, out.output
    assert "note:" not in out.output
    figures = {"metrics_by_layer.png": 7, "roc.png": 5, "oscr.png": 5, "score_distributions.png": 5,
               "per_unknown.png": 1, "confusion.png": 5, "feature_map.png": 4}
    for name, n in figures.items():
        assert len(read_panels(res / name)) == n, name
    assert not (res / "metrics_by_shots.png").exists()  # one shots value
    page = res / "report.html"
    text = page.read_text()
    refs = references(text)
    assert missing_references(page) == []
    assert sum(r.startswith("data:image/png;base64,") for r in refs) == len(figures)
    linked = [r for r in refs if not r.startswith("data:")]
    assert set(linked) == set(figures) | {"table.md", "table.csv", "per_unknown.csv"}
    assert not re.search(r'(?:src|href)="(?:https?:)?//', text) and "<script" not in text  # nothing from a network
    assert f"WARNING — {LABEL}" in text and text.count('class="warning"') == 1
    assert "<h2>Main table</h2>" in text and "<h2>Configuration</h2>" in text and fs.id in text
    assert 'class="best"' in text and "concat:1,2" in text
    import base64

    first = next(r for r in refs if r.startswith("data:"))
    with Image.open(__import__("io").BytesIO(base64.b64decode(first.split(",", 1)[1]))) as im:
        assert im.size == Image.open(res / "metrics_by_layer.png").size  # the figure itself, embedded
    md = (res / "table.md").read_text()
    assert "report.html" in md and "roc.png" in md


def _browser() -> str | None:
    return next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# Injected into a copy of the page (the report itself has no script): after load, record how many images
# the browser decoded and their sizes, so the test knows what was displayed, not only what was written.
PROBE = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.dataset.images = JSON.stringify(imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight]));
  document.body.dataset.tables = document.querySelectorAll('table').length;
});</script></body>"""


@pytest.mark.slow
@pytest.mark.skipif(_browser() is None, reason="no headless browser installed (apt-get install chromium)")
def test_report_html_opens_from_the_file_system_in_a_headless_browser(tmp_path: Path) -> None:
    fs = make_feature_set(tmp_path / "fs", n_val=10)
    res = write_study(tmp_path / "res", fs, splits=("1", "2"), layers=("0", "1", "2"), shots=("5", "all"))
    rep = write_report(res, inputs=ReportInputs(features=[fs.path], map_per_source=5))
    page = rep.paths["html"]
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", PROBE))
    base = [_browser(), *BROWSER_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(base + ["--virtual-time-budget=5000", "--dump-dom", probe.as_uri()], capture_output=True,
                         text=True, timeout=120)
    images = json.loads(re.search(r'data-images="([^"]*)"', dom.stdout).group(1).replace("&quot;", '"'))
    n_figures = sum(k.startswith("plot_") for k in rep.paths)
    assert n_figures == 8 and len(images) == n_figures
    for (complete, w, h), key in zip(images, [k for k in rep.paths if k.startswith("plot_")]):
        assert complete and (w, h) == Image.open(rep.paths[key]).size  # every figure decoded, full size
    assert re.search(r'data-tables="(\d+)"', dom.stdout).group(1) == "3"
    shot = tmp_path / "page.png"
    subprocess.run(base + ["--hide-scrollbars", "--window-size=1400,2000", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120)
    with Image.open(shot) as im:
        assert im.size == (1400, 2000)
        px = np.asarray(im.convert("RGB"), dtype=np.int16)
    warning_red = (np.abs(px - [183, 28, 28]).sum(axis=2) < 60).sum()  # the warning's text and border
    assert warning_red > 500 and px.std() > 20  # a page was drawn: not blank, the warning shows


# ------------------------------------------------------------------------------------------ compare
def _lines(protocol: str, accs: dict[str, list[float]], label: str = "") -> list[dict]:
    return [{"feature_set": "fs", "label": label, "split": str(i + 1), "layer": layer, "head": "logreg",
             "score": "msp", "shots": "all", "seed": 0, "protocol": protocol, "hparams": {}, "accuracy": a,
             "auroc": a - 0.1, "oscr": None if layer == "9" else a - 0.2, "classes": ["real", "a"]}
            for layer, vals in accs.items() for i, a in enumerate(vals)]


def _folder(path: Path, lines: list[dict]) -> Path:
    path.mkdir(parents=True)
    (path / "results.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))
    return path


def test_compare_studies_differences_are_right(tmp_path: Path) -> None:
    a = _folder(tmp_path / "clean", _lines("clean", {"7": [0.9, 0.8], "3": [0.6, 0.6], "9": [0.5, 0.5]}))
    b = _folder(tmp_path / "paper", _lines("paper", {"7": [0.95, 0.95], "3": [0.7, 0.5]}, label=LABEL))
    out = CliRunner().invoke(main, ["report", "--compare", str(a), str(b)])
    assert out.exit_code == 0, out.output
    folder = a / "compare-paper"
    with open(folder / "compare.csv") as f:
        rows = {r["layer"]: r for r in csv.DictReader(f)}
    assert list(rows) == ["3", "7", "9"]  # protocol differs between the studies: matched without it
    assert "protocol" not in rows["7"]
    assert float(rows["7"]["clean:accuracy"]) == pytest.approx(85.0)
    assert float(rows["7"]["paper:accuracy"]) == pytest.approx(95.0)
    assert float(rows["7"]["paper - clean:accuracy"]) == pytest.approx(10.0)
    assert float(rows["3"]["paper - clean:accuracy"]) == pytest.approx(0.0)
    assert float(rows["3"]["paper:accuracy_std"]) == pytest.approx(10.0)
    assert float(rows["7"]["paper - clean:oscr"]) == pytest.approx(10.0)
    assert rows["9"]["paper:accuracy"] == "" and rows["9"]["paper - clean:accuracy"] == ""  # only in A
    assert all(r["label"] == LABEL for r in rows.values())
    table = out.output
    assert f"WARNING — {LABEL}" in table and "A = clean" in table and "protocol clean" in table
    assert "B = paper" in table and "protocol paper" in table
    assert "| 7 | logreg | msp | all | 85.00 ± 5.00 | 95.00 ± 0.00 | +10.00 |" in table
    assert "| 9 | logreg | msp | all | 50.00 ± 0.00 | n/a | n/a |" in table
    assert read_panels(folder / "compare.png") == ["closed-set acc.", "AUROC", "OSCR"]
    assert missing_references(folder / "compare.html") == []
    # three studies: each later one against the first
    c = _folder(tmp_path / "third", _lines("clean", {"7": [0.5, 0.5]}))
    out = CliRunner().invoke(main, ["report", "--compare", str(a), str(b), str(c), "--out", str(tmp_path / "cmp")])
    assert out.exit_code == 0, out.output
    with open(tmp_path / "cmp" / "compare.csv") as f:
        rows = {r["layer"]: r for r in csv.DictReader(f)}
    assert "protocol" not in rows["7"]  # still one value per study
    assert float(rows["7"]["paper - clean:accuracy"]) == pytest.approx(10.0)
    assert float(rows["7"]["third - clean:accuracy"]) == pytest.approx(-35.0) and rows["3"]["third:accuracy"] == ""


def test_report_command_options_that_do_not_apply(tmp_path: Path) -> None:
    a = _folder(tmp_path / "a", _lines("clean", {"7": [0.9]}))
    b = _folder(tmp_path / "b", _lines("clean", {"7": [0.8]}))
    out = CliRunner().invoke(main, ["report", str(a), str(b)])
    assert out.exit_code == 2 and "add --compare" in out.output
    out = CliRunner().invoke(main, ["report", "--compare", str(a), str(b), "--head", str(a), "--map-per-source", "3"])
    assert out.exit_code == 2 and "--head, --map-per-source: not used by --compare" in out.output
    out = CliRunner().invoke(main, ["report", "--compare", str(a)])
    assert out.exit_code == 2 and "at least two results folders" in out.output


def test_report_inputs_agree_with_the_files_they_read() -> None:
    from attrib.probe.persist import JSON_NAME
    from attrib.probe.report_inputs import HEAD_FILE, SCORE_KINDS
    from attrib.probe.scorefile import ARRAYS

    assert HEAD_FILE == JSON_NAME and list(SCORE_KINDS) == list(ARRAYS)


@pytest.mark.slow
def test_end_to_end_probe_save_scores_and_save_head_then_report(tmp_path: Path, kept_figures, monkeypatch) -> None:
    """A real study (`attrib probe --save-scores --save-head RESULTS/head`), then `attrib report`: the
    curves' numbers are the result lines', the saved head's threshold is drawn on its own line's scores,
    and the feature map reads the test images from the feature set the lines name. Each scores file is
    read once, the head's line being the best method's."""
    from attrib.probe import report_inputs
    from attrib.probe.results import read_results
    from attrib.probe.tables import best_method

    fs = make_feature_set(tmp_path / "fs", n_val=12)
    res = tmp_path / "res"
    out = CliRunner().invoke(main, ["probe", "--features", str(fs.path), "--splits", "1", "--layers", "0-2",
                                    "--save-scores", "--save-head", str(res / "head"), "--quiet", "--out", str(res)])
    assert out.exit_code == 0, out.output
    lines = read_results(res)
    assert len(lines) == 3 and all((res / d["scores_file"]).is_file() for d in lines)
    head = json.loads((res / "head" / "head.json").read_text())
    kept_figures.clear()
    reads, read = [], report_inputs.read_scores
    monkeypatch.setattr(report_inputs, "read_scores", lambda path: reads.append(Path(path).name) or read(path))
    out = CliRunner().invoke(main, ["report", str(res), "--features", str(fs.path), "--map-per-source", "6"])
    assert out.exit_code == 0, out.output
    assert "note:" not in out.output
    for name, panels in (("roc.png", ["split 1 (seed 0)"]), ("oscr.png", ["split 1 (seed 0)"]),
                         ("feature_map.png", ["block 1", "block 2", "block 3"])):
        assert read_panels(res / name) == panels
    best = best_method(aggregate(lines))["_runs"][0]
    by_title = {f._suptitle.get_text().split(":")[0]: f for f in kept_figures if f._suptitle is not None}
    roc = by_title["ROC, known vs unknown"].axes[0]
    assert roc.get_legend().get_texts()[0].get_text() == f"AUROC {100 * best['auroc']:.2f}"
    dist = by_title["open-set score of the test images"].axes[0]
    legend = [t.get_text() for t in dist.get_legend().get_texts()]
    assert legend[-1] == f"saved head's threshold {head['threshold']:.4g}"
    (line,) = [d for d in lines if d["layer"] == str(head["layer"][0])]
    assert legend[0] == f"known ({len(np.load(res / line['scores_file'])['s_known'])})"
    assert missing_references(res / "report.html") == []
    assert line["scores_file"] == best["scores_file"] and reads == [Path(best["scores_file"]).name]


def test_test_features_are_found_by_id_and_checked(tmp_path: Path) -> None:
    from attrib.probe.report_inputs import find_test_features
    from attrib.store import FeatureSet

    fs = make_feature_set(tmp_path / "a", n_val=4)
    make_feature_set(tmp_path / "b", n_val=4, seed=1)
    other = FeatureSet.open(shutil.copytree(tmp_path / "b" / "fs", tmp_path / "other-set"))
    line = {"feature_set": fs.id, "feature_hash": fs.manifest.identity_hash, "split": "1"}
    assert find_test_features(line, None, [fs.path])[0].path == fs.path
    reader, note = find_test_features(line, None, ())
    assert reader is None and "`attrib report RESULTS --cache DIR`" in note
    reader, note = find_test_features(line, tmp_path / "cache", [other.path])
    assert reader is None and f"feature set {fs.id} is not under {tmp_path / 'cache'} or among --features" in note
    shutil.copytree(fs.path, tmp_path / "renamed")  # a folder renamed since the study: found by identity
    assert find_test_features(line, None, [tmp_path / "renamed"])[0].path == tmp_path / "renamed"
    (tmp_path / "cache").mkdir()
    shutil.copytree(other.path, tmp_path / "cache" / fs.id)  # the right name, other features
    reader, note = find_test_features(line, tmp_path / "cache")
    assert reader is None and "is not what the results were computed on" in note
    # lines of a study with --eval-features: the test images come from the evaluation feature set
    evaluated = {**line, "eval_features": [other.id], "eval_feature_hash": other.manifest.identity_hash}
    assert find_test_features(evaluated, None, [fs.path, other.path])[0].path == other.path
