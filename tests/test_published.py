"""`make paper`: the paper's block at another depth, the comparison with the published table, and the
commands the target runs (read with `make -n`, so nothing is extracted here)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from attrib.probe.published import PUBLISHED, comparison, comparison_report, main, paper_block
from attrib.probe.report import aggregate

ROOT = Path(__file__).resolve().parents[1]


def test_the_paper_block_at_other_depths() -> None:
    assert paper_block(12) == 7  # block 8 of 12: the paper's table
    assert paper_block(4) == 2   # attrib-tiny, the offline demo's model
    assert paper_block(24) == 15 and paper_block(1) == 0
    with pytest.raises(ValueError):
        paper_block(0)


def _line(split: str, acc: float, auroc: float, **kw) -> dict:
    d = {"feature_set": "fs", "split": split, "layer": "7", "head": "logreg", "score": "msp", "shots": "all",
         "seed": 0, "protocol": "paper", "accuracy": acc, "auroc": auroc, "auroc_paper": auroc - 0.01,
         "oscr": acc * auroc, "oscr_paper": acc * auroc - 0.02, "label": ""}
    d.update(kw)
    return d


def test_comparison_puts_the_published_numbers_beside_the_paper_conventions(tmp_path: Path, capsys) -> None:
    lines = [_line("1", 0.98, 0.80), _line("2", 0.96, 0.84), _line("1", 0.5, 0.5, protocol="clean")]
    table = comparison(aggregate(lines))
    assert "| closed-set accuracy | 97.82 ± 2.51 | 97.00 ± 1.00 | 97.00 ± 1.00 |" in table
    assert "| AUROC | 81.39 ± 3.28 | 81.00 ± 2.00 | 82.00 ± 2.00 |" in table
    assert "attrib, paper conventions (layer 7, 2 run(s))" in table and table.count("\n") == 1 + len(PUBLISHED)
    assert comparison(aggregate(lines[2:])) == ""  # the clean protocol is not the paper's setup
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))
    assert main(["table", str(tmp_path)]) == 0 and "| OSCR | 80.78 ± 4.02 |" in capsys.readouterr().out
    (tmp_path / "results.jsonl").write_text(json.dumps(_line("1", 0.9, 0.8, label="random-init: x")) + "\n")
    assert comparison_report(str(tmp_path)).startswith("WARNING — random-init: x")
    assert main(["table", str(tmp_path / "none")]) == 2 and "no results yet" in capsys.readouterr().err
    assert main(["tabel", "x"]) == 2


def _make_n(stamp: Path, *args: str) -> str:
    """`make -n paper`: the commands, not run. STAMP, a file just written, stands for an installed .venv."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(["make", "-n", "--no-print-directory", "paper", f"STAMP={stamp}", *args],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    assert "pip install" not in out.stdout
    return out.stdout


def test_make_paper_runs_the_papers_setup(tmp_path: Path) -> None:
    stamp = tmp_path / "installed"
    stamp.write_text("")
    demo = _make_n(stamp)
    assert demo.count("features --dataset demo") == 2 and "--fallback-model attrib-tiny" in demo
    assert "--preprocess paper-train" in demo and "--preprocess paper)" in demo
    assert 'layers="paper"' in demo and "attrib.probe.published block" in demo
    probe = demo[demo.index(" probe --features"):]
    for arg in ('--eval-features "$eval"', "--protocol paper", "--heads logreg", "--scores msp", "--save-scores",
                "--out results/demo-paper"):
        assert arg in probe
    assert "report results/demo-paper --metrics paper" in demo and "published table results/demo-paper" in demo
    assert "--known-test" not in demo
    real = _make_n(stamp, "DATASET=genimage", "ROOT=/data/GenImage", "SPLITS_DIR=/data/splits", "LAYERS=7")
    assert "--fallback-model" not in real and 'layers="7"' in real
    assert "--splits-dir /data/splits --known-test val" in real and "--out results/genimage-paper" in real
