"""A shots value larger than a class is noted and reported with the counts really used, never shown bare."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from synthetic_features import make_feature_set

from attrib.cli import main
from attrib.data.sampling import SampledSplits
from attrib.data.splits import builtin_splits
from attrib.probe.report import aggregate, markdown_table
from attrib.probe.shots import fell_short, shots_notes, train_counts, used_per_class


@pytest.fixture(scope="module")
def fs(tmp_path_factory):
    return make_feature_set(tmp_path_factory.mktemp("synthetic"), n_train=10, n_val=4)


def _rows(fs, split="1"):
    ok, _ = fs.status()
    return SampledSplits(fs.images, ok, {split: builtin_splits("demo")[split]}).rows(split, 0)


def test_notes_name_the_classes_a_shots_value_cannot_fill(fs) -> None:
    rows = _rows(fs)
    counts = train_counts(rows)
    small, large = min(counts.values()), max(counts.values())
    assert small < large  # one real training image failed to decode in the synthetic set
    assert shots_notes([1, small, None], {("1", 0): rows}) == []  # every class can fill these
    short = [c for c, n in counts.items() if n < large]
    (note,) = shots_notes([large], {("1", 0): rows})
    assert note.startswith(f"--shots {large}: fewer training images than that in some classes (split 1: ")
    assert all(f"{c} {counts[c]}" in note for c in short) and "unbalanced" in note
    (note,) = shots_notes([100000], {("1", 0): rows})
    assert note.startswith(f"--shots 100000: no class has that many training images (the largest has {large})")
    assert "the same as --shots all" in note


def test_used_per_class_reads_the_result_lines() -> None:
    lines = [{"n": {"train_per_class": {"real": 7, "a": 9}}}, {"n": {"train_per_class": {"real": 9, "a": 9}}}]
    assert used_per_class(lines) == "7–9" and used_per_class(lines[1:]) == "9" and used_per_class([{}]) == ""
    assert fell_short("8", lines) and not fell_short("7", lines) and not fell_short("all", lines)


@pytest.mark.slow  # the report's plots take most of it
def test_probe_with_too_many_shots_says_so_in_the_log_table_and_csv(fs, tmp_path: Path) -> None:
    """`--shots 100000` used to be reported as '100000' though every class trained on its ~9 images."""
    counts = train_counts(_rows(fs))
    res = CliRunner().invoke(main, ["probe", "--features", str(fs.path), "--splits", "1", "--layers", "2", "--shots",
                                    "2,100000", "--grid", "C=1", "--out", str(tmp_path / "r")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "note: --shots 100000: no class has that many training images" in res.output
    assert "--shots 2:" not in res.output
    used = f"{min(counts.values())}–{max(counts.values())}"
    assert f"| 100000 (used {used}/class) |" in res.output and "| 2 |" in res.output
    lines = [json.loads(x) for x in (tmp_path / "r" / "results.jsonl").read_text().splitlines()]
    line = next(d for d in lines if d["shots"] == "100000")
    assert line["n"]["train_per_class"] == counts  # the real counts, per class
    table = (tmp_path / "r" / "table.md").read_text()
    assert f"100000 (used {used}/class)" in table and "Shots 100000: some classes have fewer training images" in table
    with open(tmp_path / "r" / "table.csv", newline="") as f:
        by_shots = {r["shots"]: r for r in csv.DictReader(f)}
    assert by_shots["100000"]["train_per_class"] == used and by_shots["2"]["train_per_class"] == "2"


def test_ordinary_tables_are_unchanged() -> None:
    lines = [{"layer": "1", "head": "logreg", "score": "msp", "shots": s, "protocol": "clean", "split": "1",
              "seed": 0, "accuracy": 0.5, "n": {"train_per_class": {"a": 5, "b": 5}}} for s in ("5", "all")]
    text = markdown_table(aggregate(lines), ("accuracy",))
    assert "| 5 |" in text and "| all |" in text and "used" not in text
