"""Grouped unknowns (issue 13.3) and the paper's other dataset configs (issue 13.4).

The OSMA- and DiffusionForensics-shaped files here are written by these tests in the structure of the
paper's ``configs/data/osma.yaml`` / ``diffusionforensics.yaml`` and their POSE annotation files
(``splitN_test_out_seed.txt`` ...), over the synthetic feature set's demo sources.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from attrib.cli import main
from attrib.data.pose import PoseSplits, find_pose_files
from attrib.data.sampling import SampledSplits
from attrib.data.splitfile import load_split_file
from attrib.data.splits import Split, SplitError
from attrib.probe.grouptables import group_rows
from attrib.probe.options import parse_layers
from attrib.probe.report import aggregate, write_report
from attrib.probe.study import StudyConfig, run_study
from attrib.store import FeatureSet

from synthetic_features import make_feature_set

KNOWN = ("deconv", "spectral", "perlin")
GROUPS = {"seed": ("upconv",), "arch": ("autoencoder", "palette"), "dataset": ("fractal",)}
ALL = ("upconv", "autoencoder", "palette", "fractal")
OPEN_SET = ("auroc", "fpr95", "aupr_in", "aupr_out", "oscr", "auroc_paper", "oscr_paper", "tnr95_paper")


@pytest.fixture(scope="module")
def fs(tmp_path_factory) -> FeatureSet:
    return make_feature_set(tmp_path_factory.mktemp("groups"))


def _names(xs) -> str:
    return "[" + ", ".join(f"'{x}'" for x in xs) + "]"


def _osma_yaml(path: Path, splits=("split1",)) -> Path:
    """A config in the shape of the paper's osma.yaml (its extra keys included)."""
    text = ""
    for s in splits:
        text += (f"{s}:\n    data_path: ./dataset/OSMA\n    known_classes: {_names(('real',) + KNOWN)}\n"
                 "    unknown_classes:\n" + "".join(f"        {g}: {_names(m)}\n" for g, m in GROUPS.items()) +
                 f"        all: {_names(ALL)}\n    train_collection: {s}_train\n    val_collection: {s}_val\n"
                 f"    test_data_path: ./dataset/OSMA/{s}_test/annotations/{s}_test.txt\n    out_data_paths:\n" +
                 "".join(f"        {g}: ./dataset/OSMA/{s}_test/annotations/{s}_test_out_{g}.txt\n" for g in GROUPS) +
                 f"        all: ./dataset/OSMA/{s}_test/annotations/{s}_test_out.txt\n\n")
    path.write_text(text)
    return path


def _write(f: Path, lines: list[tuple[str, int]]) -> None:
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text("".join(f"./dataset/OSMA/{p}\t{y}\n" for p, y in lines))


def _osma_files(d: Path, fs: FeatureSet, split: str = "split1", group_labels: str = "group") -> Path:
    """POSE annotation files of one OSMA split: known classes from train/ (2 of 3 train, 1 of 3 val) and
    val/ (test); unknown test files per group and for all. ``group_labels``: ``group`` = labels index
    the group's list, ``all`` = the split's whole unknown list."""
    classes = ("real",) + KNOWN
    parts: dict[str, list[tuple[str, int]]] = {"train": [], "val": [], "test": [], "out": []}
    groups: dict[str, list[tuple[str, int]]] = {g: [] for g in GROUPS}
    for i, (p, src, sub) in enumerate(zip(fs.images.paths, fs.images.sources, fs.images.subsets)):
        if src in classes:
            part = ("val" if i % 3 == 0 else "train") if sub == "train" else "test"
            parts[part].append((p, classes.index(src)))
        elif sub == "val":
            parts["out"].append((p, ALL.index(src)))
            g = next(g for g, m in GROUPS.items() if src in m)
            groups[g].append((p, GROUPS[g].index(src) if group_labels == "group" else ALL.index(src)))
    ann = {part: d / f"{split}_{'test' if part == 'out' else part}" / "annotations" for part in parts}
    for part in ("train", "val", "test"):
        _write(ann[part] / f"{split}_{part}.txt", parts[part])
    _write(ann["out"] / f"{split}_test_out.txt", parts["out"])
    for g, lines in groups.items():
        _write(ann["out"] / f"{split}_test_out_{g}.txt", lines)
    return d


def _study(fs: FeatureSet, splits, out: Path, **kw) -> list[dict]:
    cfg = StudyConfig(splits=splits, layers=parse_layers("2", fs.n_blocks), heads=["logreg"], scores=["msp"],
                      grid={"C": [1.0]}, **kw)
    run_study(fs, cfg, out, progress=False, log=lambda _m: None)
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------ split files
def test_split_file_groups(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("A:\n  known: [deconv]\n  unknown: {seed: [upconv], arch: [autoencoder, palette]}\n"
                 "B:\n  known: [deconv]\n  unknown: [upconv, fractal]\n")
    s = load_split_file(f)
    assert s["A"].unknown == ("upconv", "autoencoder", "palette")
    assert s["A"].unknown_groups == {"seed": ("upconv",), "arch": ("autoencoder", "palette")}
    assert s["B"].groups == () and s["B"].unknown_groups == {}
    osma = load_split_file(_osma_yaml(tmp_path / "osma.yaml", ("split1", "split2")))
    assert list(osma) == ["split1", "split2"] and osma["split1"].classes == ("real",) + KNOWN
    assert osma["split1"].unknown == ALL and osma["split1"].unknown_groups == GROUPS
    df = tmp_path / "diffusionforensics.yaml"  # the paper's DF config: one split, unknown {all: [...]}
    df.write_text("DiffusionForensics:\n    data_path: ./dataset\n    known_classes: ['real', 'deconv', 'spectral']\n"
                  "    unknown_classes:\n        all: ['upconv','fractal']\n    train_collection: df_train\n"
                  "    val_collection: df_val\n    test_data_path: ./dataset/df_test/annotations/df_test.txt\n"
                  "    out_data_paths:\n        all: ./dataset/df_test/annotations/test_out.txt")
    sp = load_split_file(df)["DiffusionForensics"]
    assert sp.known == ("deconv", "spectral") and sp.unknown == ("upconv", "fractal") and sp.groups == ()
    for body, msg in (("{seed: [upconv], all: [fractal]}", r"upconv in a group but not in 'all'"),
                      ("{seed: [upconv, deconv]}", r"deconv both known and unknown"),
                      ("{seed: [upconv], seed: [fractal]}", r"group 'seed' listed twice"),
                      ("{seed: upconv}", r"unknown seed must be a list")):
        f.write_text(f"A:\n  known: [deconv]\n  unknown: {body}\n")
        with pytest.raises(SplitError, match=msg):
            load_split_file(f)
    with pytest.raises(SplitError, match="not among the split's unknown generators"):
        from attrib.data.splits import check_split
        check_split(Split("X", ("deconv",), ("upconv",), groups=(("g", ("fractal",)),)))


# ------------------------------------------------------------------------------------ metrics
def test_group_metrics_equal_a_study_of_that_group_alone(fs: FeatureSet, tmp_path: Path) -> None:
    ok, _ = fs.status()
    grouped = Split("G", KNOWN, ALL, "test", tuple(GROUPS.items()))
    lines = _study(fs, SampledSplits(fs.images, ok, {"G": grouped}), tmp_path / "grouped", seeds=2)
    assert len(lines) == 2
    for line in lines:
        assert list(line["groups"]) == ["seed", "arch", "dataset", "all"]
        for m in OPEN_SET:  # the top-level numbers stay those of every unknown generator
            assert line["groups"]["all"][m] == pytest.approx(line[m], nan_ok=True)
        assert line["groups"]["all"]["n_unknown"] == line["n"]["test_unknown"]
    for g, members in GROUPS.items():
        alone = Split(g, KNOWN, members, "test")
        ref = _study(fs, SampledSplits(fs.images, ok, {g: alone}), tmp_path / g, seeds=2)
        for line, r in zip(lines, ref):
            assert "groups" not in r and r["seed"] == line["seed"]
            assert line["groups"][g]["n_unknown"] == r["n"]["test_unknown"] > 0
            for m in OPEN_SET:
                assert line["groups"][g][m] == pytest.approx(r[m], nan_ok=True), (g, m)
    # the report: one table per group in table.md, every group metric in groups.csv
    rep = write_report(tmp_path / "grouped")
    md = (tmp_path / "grouped" / "table.md").read_text()
    assert "## Unknown groups" in md and all(f"### {g}" in md for g in ("seed", "arch", "dataset", "all"))
    csv_lines = rep.paths["groups_csv"].read_text().splitlines()
    assert csv_lines[0].startswith("layer,head,score,shots,protocol,params,group,runs,n_unknown,auroc,auroc_std")
    assert len(csv_lines) == 1 + 4
    rows = group_rows(aggregate(lines))
    seed = next(r for r in rows if r["group"] == "seed")
    assert seed["auroc"] == pytest.approx(100 * np.mean([x["groups"]["seed"]["auroc"] for x in lines]))
    # a study without groups writes no group tables (and removes a stale groups.csv)
    plain = _study(fs, SampledSplits(fs.images, ok, {"P": Split("P", KNOWN, ALL)}), tmp_path / "plain")
    assert "groups" not in plain[0]
    (tmp_path / "plain" / "groups.csv").write_text("stale")
    write_report(tmp_path / "plain")
    assert not (tmp_path / "plain" / "groups.csv").exists()
    assert "Unknown groups" not in (tmp_path / "plain" / "table.md").read_text()


# ------------------------------------------------------------------------------------ the paper's files
@pytest.mark.parametrize("group_labels", ["group", "all"])
def test_osma_config_and_annotation_files(fs: FeatureSet, tmp_path: Path, group_labels: str, monkeypatch) -> None:
    from attrib.data import pose

    reads, read = [], pose.read_pose_file
    monkeypatch.setattr(pose, "read_pose_file", lambda path: reads.append(Path(path).name) or read(path))
    d = _osma_files(tmp_path / "OSMA", fs, group_labels=group_labels)
    files = find_pose_files(d)["split1"]
    assert {p for p in files} == {"train", "val", "test", "test_out", "test_out:seed", "test_out:arch",
                                  "test_out:dataset"}
    ok, _ = fs.status()
    cfg = load_split_file(_osma_yaml(tmp_path / "osma.yaml"))
    ps = PoseSplits(fs.images, ok, d, splits=cfg, dataset_kind="folder")
    assert ps.split("split1").unknown_groups == GROUPS
    assert len(reads) == len(set(reads)) == 7   # each split file read once
    r = ps.rows("split1", 0)
    assert len(r.val_unknown) == 0 and sorted(set(r.test_unknown_source)) == sorted(ALL)
    assert [fs.images.sources[i] for i in r.test_unknown] == list(r.test_unknown_source)
    assert any("no validation images of unknown generators" in n for n in ps.notes())
    assert ps.describe("split1")["groups"] == {g: list(m) for g, m in GROUPS.items()}
    lines = _study(fs, ps, tmp_path / "res")
    assert list(lines[0]["groups"]) == ["seed", "arch", "dataset", "all"]
    assert lines[0]["groups"]["arch"]["n_unknown"] == sum(1 for s in r.test_unknown_source if s in GROUPS["arch"])
    # without the config's groups (a flat unknown list), the group files alone define the groups when their
    # labels index the split's unknown list; labels that index a group nobody names cannot be read
    flat = {"split1": Split("split1", KNOWN, ALL, "flat")}
    if group_labels == "all":
        assert PoseSplits(fs.images, ok, d, splits=flat, dataset_kind="folder").split("split1").unknown_groups == GROUPS
    else:
        with pytest.raises(SplitError, match=r"split1_test_out_arch.txt:1: label 0 = upconv, but autoencoder"):
            PoseSplits(fs.images, ok, d, splits=flat, dataset_kind="folder")


def test_group_file_contradicting_the_config_is_refused(fs: FeatureSet, tmp_path: Path) -> None:
    d = _osma_files(tmp_path / "OSMA", fs, group_labels="all")
    ok, _ = fs.status()
    wrong = {"split1": Split("split1", KNOWN, ALL, "cfg", (("seed", ("fractal",)), ("arch", ("upconv",))))}
    with pytest.raises(SplitError, match=r"group 'arch' holds autoencoder, palette, which the split file does not"):
        PoseSplits(fs.images, ok, d, splits=wrong, dataset_kind="folder")


def test_diffusionforensics_layout(fs: FeatureSet, tmp_path: Path) -> None:
    """df_train / df_val / df_test collections, unknown test images in df_test/annotations/test_out.txt,
    the split file's single split named DiffusionForensics: read as they are, by the CLI too."""
    d = tmp_path / "dataset"
    known, unknown = ("deconv", "spectral"), ("upconv", "fractal")
    classes = ("real",) + known
    parts: dict[str, list] = {"df_train": [], "df_val": [], "df_test": [], "test_out": []}
    for i, (p, src, sub) in enumerate(zip(fs.images.paths, fs.images.sources, fs.images.subsets)):
        if src in classes:
            parts[("df_val" if i % 3 == 0 else "df_train") if sub == "train" else "df_test"].append(
                (p, classes.index(src)))
        elif src in unknown and sub == "val":
            parts["test_out"].append((p, unknown.index(src)))
    for name, lines in parts.items():
        folder = "df_test" if name == "test_out" else name
        _write(d / folder / "annotations" / f"{name}.txt", lines)
    cfg = tmp_path / "diffusionforensics.yaml"
    cfg.write_text(f"DiffusionForensics:\n    data_path: ./dataset\n    known_classes: {_names(classes)}\n"
                   f"    unknown_classes:\n        all: {_names(unknown)}\n    train_collection: df_train\n"
                   "    val_collection: df_val\n    test_data_path: ./dataset/df_test/annotations/df_test.txt\n"
                   "    out_data_paths:\n        all: ./dataset/df_test/annotations/test_out.txt\n")
    assert list(find_pose_files(d)) == ["df"]
    out = tmp_path / "res"
    res = CliRunner().invoke(main, ["probe", "--features", str(fs.path), "--split-file", str(cfg), "--splits-dir",
                                    str(d), "--layers", "2", "--grid", "C=1", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    line = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    assert line["split"] == "df" and line["classes"] == list(classes) and "groups" not in line
    assert line["n"]["test_unknown"] == len(parts["test_out"]) and line["n"]["val_unknown"] == 0
    res = CliRunner().invoke(main, ["probe", "--features", str(fs.path), "--split-file", str(cfg), "--splits-dir",
                                    str(d), "--layers", "2", "--protocol", "paper", "--out", str(tmp_path / "p")])
    assert res.exit_code == 2 and "no validation images of its unknown generators" in res.output
