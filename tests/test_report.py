"""Reports: exact aggregation (mean ± population std over splits x seeds), per-unknown tables, files,
plots, and the random-init label everywhere."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from attrib.cli import main
from attrib.probe.report import aggregate, per_unknown, write_report

LABEL = "random-init: pipeline check, not CLIP features"


def _line(split, seed, layer="7", shots="all", protocol="clean", acc=0.9, auroc=0.8, C=1.0, label=LABEL,
          **extra):
    classes = ["real", "a", "b"] if split == "1" else ["real", "b", "c"]
    d = {"feature_set": "fs", "label": label, "split": split, "layer": layer, "head": "logreg", "score": "msp",
         "shots": shots, "seed": seed, "protocol": protocol, "hparams": {"C": C}, "accuracy": acc,
         "macro_f1": acc, "auroc": auroc, "fpr95": 0.5, "aupr_in": 0.7, "aupr_out": None, "oscr": acc * auroc,
         "classes": classes, "confusion": [[5, 0, 0], [1, 4, 0], [0, 0, 5]],
         "auroc_per_unknown": {"x": auroc, "y": 0.5},
         "unknown_confusion": {"x": [0, 3, 1], "y": [2, 2, 0]}}
    d.update(extra)
    return d


def _write(folder: Path, lines: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))
    return folder


def test_aggregate_is_exact() -> None:
    lines = [_line("1", 0, acc=0.9, C=0.1), _line("1", 1, acc=0.8, C=0.1), _line("2", 0, acc=0.7, C=10.0),
             _line("2", 1, acc=0.6, C=1.0), _line("1", 0, protocol="paper", acc=0.5)]
    rows = aggregate(lines)
    assert [(r["protocol"], r["n_runs"], r["splits"], r["seeds"]) for r in rows] == [("clean", 4, 2, 2),
                                                                                    ("paper", 1, 1, 1)]
    clean = rows[0]
    accs = np.array([90.0, 80.0, 70.0, 60.0])
    assert clean["accuracy"] == pytest.approx(accs.mean()) and clean["accuracy_std"] == pytest.approx(accs.std())
    assert clean["accuracy_std"] == pytest.approx(np.sqrt(125.0))  # population std, by hand
    assert np.isnan(clean["aupr_out"])  # undefined everywhere: n/a, not 0
    assert clean["hparams"] == "C=0.55 [0.1–10]" and rows[1]["hparams"] == "C=1"
    layers = aggregate([_line("1", 0, layer=x) for x in ("10", "2", "concat:1,2")])
    assert [r["layer"] for r in layers] == ["2", "10", "concat:1,2"]  # numeric block order


def test_per_unknown_sums_predictions_by_class_name() -> None:
    rows = aggregate([_line("1", 0, auroc=0.9), _line("2", 0, auroc=0.7)])
    unk = {u["generator"]: u for u in per_unknown(rows)}
    assert unk["x"]["auroc"] == pytest.approx(80.0) and unk["x"]["auroc_std"] == pytest.approx(10.0)
    # x was predicted as a (3) and b (1) in split 1, as b (3) and c (1) in split 2: b 4 of 8
    assert unk["x"]["mistaken_for"] == "b" and unk["x"]["fraction"] == pytest.approx(50.0)
    assert unk["y"]["mistaken_for"] == "real" and unk["y"]["fraction"] == pytest.approx(50.0)


def test_report_files_and_labels(tmp_path: Path) -> None:
    lines = [_line(s, seed, layer=lay, shots=sh) for s in ("1", "2") for seed in (0, 1)
             for lay in ("3", "7") for sh in ("5", "all")]
    res = _write(tmp_path / "r", lines)
    rep = write_report(res)
    assert set(rep.paths) == {"markdown", "csv", "per_unknown_csv", "plot_layers", "plot_shots",
                              "plot_confusion", "plot_unknown", "html"}  # no saved scores: no curves
    for k in ("plot_layers", "plot_shots", "plot_confusion", "plot_unknown"):
        assert rep.paths[k].stat().st_size > 10_000
    md = rep.paths["markdown"].read_text()
    assert f"WARNING — {LABEL}" in md and f"WARNING — {LABEL}" in rep.main
    assert "| 7 | logreg | msp | 5 | clean | 4 | 90.00 ± 0.00 | 80.00 ± 0.00 | 72.00 ± 0.00 |" in rep.main
    assert "FPR@95TPR" in md and "| x | 4 | 80.00 ± 0.00 | b | 50.0 |" in md
    with open(rep.paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(r["label"] == LABEL for r in rows) and rows[0]["accuracy"] == "90.0000"
    with open(rep.paths["per_unknown_csv"]) as f:
        assert all(r["label"] == LABEL for r in csv.DictReader(f))
    # one shots value left: the shots plot is not made, and a stale one is removed
    _write(res, [d for d in lines if d["shots"] == "all"])
    rep = write_report(res)
    assert "plot_shots" not in rep.paths and not (res / "metrics_by_shots.png").exists()


def test_legend_of_many_methods_stays_off_the_panels(tmp_path: Path, monkeypatch) -> None:
    import matplotlib.pyplot as plt
    from PIL import Image

    from attrib.probe.plots import plot_by_shots

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to measure it
    lines = [_line("1", 0, shots=sh, head=f"head-with-a-long-name-{i}") for i in range(30) for sh in ("5", "all")]
    path = plot_by_shots(aggregate(lines), tmp_path / "shots.png", [LABEL])
    (fig,) = figures
    (legend,) = fig.legends
    assert len(legend.get_texts()) == 30
    renderer = fig.canvas.get_renderer()
    box = legend.get_window_extent(renderer)
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == 7 and not any(box.overlaps(ax.get_tightbbox(renderer)) for ax in panels)
    with Image.open(path) as im:  # the saved image grew to hold the legend below the panels
        assert im.height > fig.get_figheight() * 100 + box.height * 0.9


def test_real_weights_carry_no_warning(tmp_path: Path) -> None:
    rep = write_report(_write(tmp_path, [_line("1", 0, label="")]))
    assert "WARNING" not in rep.paths["markdown"].read_text() and "WARNING" not in rep.main


def test_report_command(tmp_path: Path) -> None:
    res = _write(tmp_path / "r", [_line("1", 0), _line("2", 0)])
    out = CliRunner().invoke(main, ["report", str(res), "--out", str(tmp_path / "elsewhere")])
    assert out.exit_code == 0, out.output
    assert "| 7 | logreg | msp | all | clean | 2 |" in out.output and (tmp_path / "elsewhere" / "table.md").exists()
    (tmp_path / "empty").mkdir()
    out = CliRunner().invoke(main, ["report", str(tmp_path / "empty")])
    assert out.exit_code == 2 and "no results yet" in out.output
    (tmp_path / "file").write_text("x")
    for bad, why in ((tmp_path / "file", "is a file; give a folder"),
                     (tmp_path / "file" / "sub", "is a file, so nothing can be created under it")):
        out = CliRunner().invoke(main, ["report", str(res), "--out", str(bad)])
        assert out.exit_code == 2 and out.output.startswith(f"Error: --out {bad}") and why in out.output


@pytest.mark.slow
def test_metrics_paper_puts_the_paper_conventions_in_the_main_table(tmp_path: Path) -> None:
    paper = dict(auroc_paper=0.75, oscr_paper=0.6, tnr95_paper=0.4)
    res = _write(tmp_path / "r", [_line("1", 0, **paper), _line("2", 0, **paper, protocol="paper")])
    rep = write_report(res, metrics="paper")
    header = "| layer | head | score | shots | protocol | runs | closed-set acc. | AUROC (paper) | OSCR (paper) | " \
             "TNR@95TPR (paper) |"
    assert header in rep.main and "Metrics: paper — the paper's code's conventions" in rep.main
    row = "| 7 | logreg | msp | all | clean | 1 | 90.00 ± 0.00 | 75.00 ± 0.00 | 60.00 ± 0.00 | 40.00 ± 0.00 |"
    assert row in rep.main
    md = rep.paths["markdown"].read_text()
    assert header in md and "(the method with the highest mean OSCR (paper))" in md
    with open(rep.paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert all(r["metrics"] == "paper" and r["auroc_paper"] == "75.0000" and r["auroc"] == "80.0000" for r in rows)
    # the default: the standard conventions, said so; lines written before the paper metrics show n/a there
    rep = write_report(_write(tmp_path / "old", [_line("1", 0)]))
    assert "| closed-set acc. | AUROC | OSCR |" in rep.main and "Metrics: standard" in rep.main
    assert "AUROC (paper)" not in rep.main and "| n/a |" in rep.paths["markdown"].read_text()
    with pytest.raises(Exception, match="--metrics 'best': use one of standard, paper"):
        write_report(res, metrics="best")
    out = CliRunner().invoke(main, ["report", str(res), "--metrics", "paper"])
    assert out.exit_code == 0 and header in out.output


HEAVY = ("torch", "h5py", "open_clip", "timm", "matplotlib")
LIGHT_SCRIPT = """
import json, sys
from attrib.probe.report import aggregate, markdown_table
from attrib.probe.results import read_results
rows = aggregate(read_results(sys.argv[1]))
assert rows and markdown_table(rows)
heavy = {heavy!r}
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
"""


def test_reading_and_aggregating_results_loads_no_heavy_library(tmp_path: Path) -> None:
    """`attrib report` reads results without the feature store (h5py), the backbones (torch, open_clip,
    timm) or the plots (matplotlib, loaded by the plotting functions only). In a fresh interpreter:
    other tests have imported all of them into this one."""
    import os
    import subprocess
    import sys

    import attrib

    folder = _write(tmp_path / "res", [_line("1", 0), _line("2", 0, acc=0.7)])
    env = {**os.environ, "PYTHONPATH": str(Path(attrib.__file__).parents[1])}  # this checkout's attrib
    out = subprocess.run([sys.executable, "-c", LIGHT_SCRIPT.format(heavy=HEAVY), str(folder)], env=env,
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
