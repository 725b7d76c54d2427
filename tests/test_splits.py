"""Open-set splits: the sampling protocol, YAML/JSON split files, the paper's POSE split files, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from trees import genimage_tree, paper_pose_rows, pose_files

from attrib.cli import main
from attrib.data.catalog import ImageList
from attrib.data.genimage import SPLITS, read_genimage
from attrib.data.pose import PoseSplits
from attrib.data.sampling import SampledSplits, split_rows
from attrib.data.splitfile import load_split_file
from attrib.data.splits import Split, SplitError, builtin_splits, select_splits
from attrib.store import FeatureSet

PAPER1 = Split("1", *SPLITS[1])


@pytest.fixture(scope="module")
def flat(tmp_path_factory) -> ImageList:
    return read_genimage(genimage_tree(tmp_path_factory.mktemp("flat"), n_train=10, n_val=4))


def _ok(images: ImageList) -> np.ndarray:
    return np.ones(len(images), bool)


def _name(images: ImageList, row: int) -> str:
    return images.paths[row].rsplit("/", 1)[-1]


# ---------------------------------------------------------------------------- sampling protocol
def test_sampled_protocol_on_genimage(flat: ImageList) -> None:
    r = split_rows(flat, _ok(flat), PAPER1, seed=0, train_per_class=None, val_per_class=None, test_per_class=None)
    classes = PAPER1.classes
    for rows, labels in ((r.train, r.y_train), (r.val, r.y_val), (r.test, r.y_test)):
        assert [flat.sources[i] for i in rows] == [classes[y] for y in labels]
    assert {flat.subsets[i] for i in np.r_[r.train, r.val, r.val_unknown]} == {"train"}
    assert {flat.subsets[i] for i in np.r_[r.test, r.test_unknown]} == {"val"}  # GenImage val/ is the test set
    assert not set(r.train) & set(r.val)
    assert not {_name(flat, i) for i in r.train} & {_name(flat, i) for i in r.val}  # same photo, same side
    assert set(r.val_unknown_source) == set(r.test_unknown_source) == set(PAPER1.unknown)
    assert [flat.sources[i] for i in r.test_unknown] == list(r.test_unknown_source)
    gen_val = [i for i in r.val if flat.sources[i] == "wukong"]
    assert len(gen_val) == 2 and sum(flat.sources[i] == "wukong" for i in r.train) == 8  # 20% of 10 held out
    assert r.sizes()["test_unknown"] == 4 * 4


def test_sampling_is_seeded_and_caps_only_add(flat: ImageList) -> None:
    a = split_rows(flat, _ok(flat), PAPER1, seed=0)
    b = split_rows(flat, _ok(flat), PAPER1, seed=0)
    c = split_rows(flat, _ok(flat), PAPER1, seed=1)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.test, b.test)
    assert not np.array_equal(a.train, c.train)
    small = split_rows(flat, _ok(flat), PAPER1, seed=0, train_per_class=2, val_per_class=1, test_per_class=3)
    assert np.bincount(small.y_train).tolist() == [2] * 5 and np.bincount(small.y_test).tolist() == [3] * 5
    assert set(small.train) <= set(a.train) and set(small.test) <= set(a.test)
    assert all((small.val_unknown_source == s).sum() == 1 for s in PAPER1.unknown)


def test_failed_images_are_excluded(flat: ImageList) -> None:
    ok = _ok(flat)
    bad = [i for i, s in enumerate(flat.sources) if s == "VQDM"][:3]
    ok[bad] = False
    r = split_rows(flat, ok, PAPER1, seed=0, train_per_class=None, val_per_class=None, test_per_class=None)
    assert not set(bad) & set(np.r_[r.train, r.val, r.test])
    assert r.notes == ["3 images of this split failed to decode at extraction and are excluded"]


def test_folder_subsets_and_unsplit_sources() -> None:
    rows = [(f"{s}/{sub}/{i}.png", s, sub) for s in ("real", "ganA") for sub, n in
            (("train", 5), ("val", 3), ("test", 4)) for i in range(n)]
    rows += [(f"{g}/{i}.png", g, "all") for g in ("ganB", "ganC") for i in range(10)]
    images = ImageList.from_rows(rows)
    r = split_rows(images, _ok(images), Split("s", ("ganA", "ganB"), ("ganC",)), train_per_class=None,
                   val_per_class=None, test_per_class=None)
    by = {k: [(images.sources[i], images.subsets[i]) for i in getattr(r, k)] for k in ("train", "val", "test")}
    assert by["train"].count(("ganA", "train")) == 5 and by["val"].count(("ganA", "val")) == 3
    assert by["test"].count(("ganA", "test")) == 4
    assert [by[k].count(("ganB", "all")) for k in ("train", "val", "test")] == [6, 2, 2]  # 60/20/20
    assert r.sizes()["val_unknown"] == 2 and r.sizes()["test_unknown"] == 8  # unknown: 20/80


def test_subset_variants_are_read_and_other_subsets_noted() -> None:
    """List/folder subsets spelt ``Train``/``Val``/``testing`` are used as such; other names are pooled, noted."""
    rows = [(f"{s}/{sub}/{i}.png", s, sub) for s in ("real", "ganA") for sub, n in
            (("Train", 5), ("Val", 3), ("testing", 4)) for i in range(n)]
    rows += [(f"ganB/{sub}/{i}.png", "ganB", sub) for sub in ("part1", "part2") for i in range(5)]
    rows += [(f"ganC/{i}.png", "ganC", "all") for i in range(10)]
    images = ImageList.from_rows(rows)
    split = Split("s", ("ganA", "ganB"), ("ganC",))
    r = split_rows(images, _ok(images), split, train_per_class=None, val_per_class=None, test_per_class=None)
    by = {k: [(images.sources[i], images.subsets[i]) for i in getattr(r, k)] for k in ("train", "val", "test")}
    assert by["train"].count(("ganA", "Train")) == 5 and by["val"].count(("ganA", "Val")) == 3
    assert by["test"] == [("real", "testing")] * 4 + [("ganA", "testing")] * 4 + by["test"][8:]
    assert len(by["train"]) - 10 == 6 and len(by["test"]) - 8 == 2  # ganB pooled: 60/20/20
    assert r.notes == ["real: subset 'Train' read as train", "real: subset 'Val' read as val",
                       "real: subset 'testing' read as test", "ganA: subset 'Train' read as train",
                       "ganA: subset 'Val' read as val", "ganA: subset 'testing' read as test",
                       "ganB: subset(s) 'part1', 'part2' are not train/val/test: pooled and cut 60% train, "
                       "20% validation, the rest test"]
    notes = SampledSplits(images, _ok(images), {"s": split}).notes()  # printed by `attrib probe`
    assert notes == [f"split s: {n}" for n in r.notes]


@pytest.mark.parametrize("split, match", [
    (Split("x", ("ADM", "glide"), ("glide", "VQDM")), r"split x: glide both known and unknown"),
    (Split("x", ("ADM",), ("real",)), r"'real' is always known class 0"),
    (Split("x", ("ADM", "ADM"), ("VQDM",)), r"ADM listed twice among the known"),
    (Split("x", ("ADM", "DALLE"), ("VQDM",)), r"source\(s\) DALLE have no usable images .* present: ADM \(14\)"),
    (Split("x", ("ADM",), ()), r"no unknown generators"),
])
def test_split_errors(flat: ImageList, split: Split, match: str) -> None:
    with pytest.raises(SplitError, match=match):
        split_rows(flat, _ok(flat), split)
    with pytest.raises(SplitError, match=match):  # checked up front, before a study starts
        SampledSplits(flat, _ok(flat), {"x": split})


def test_class_without_images_after_capping_is_an_error(tmp_path: Path) -> None:
    images = read_genimage(genimage_tree(tmp_path, n_train=3, n_val=1))
    with pytest.raises(SplitError, match=r"split 1 \(the paper's GenImage split\): known class 'wukong' has no "
                                         r"validation images \(usable images by subset: train 3, val 1\)"):
        split_rows(images, _ok(images), builtin_splits("genimage")["1"])


# ---------------------------------------------------------------------------- split definitions
def test_yaml_json_and_the_papers_config_format(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text("splits:\n  A:\n    known: [ganA, ganB]\n    unknown: [ganC]\n"
                                     "  B:\n    known: [ganC]\n    unknown: [ganA, ganB]\n")
    s = load_split_file(tmp_path / "s.yaml")
    assert list(s) == ["A", "B"] and s["A"].classes == ("real", "ganA", "ganB") and s["B"].unknown == ("ganA", "ganB")
    assert s["B"].origin == f"{tmp_path / 's.yaml'}:5"
    (tmp_path / "s.json").write_text(json.dumps({"A": {"known": ["ganA"], "unknown": ["ganC"]}}))
    assert load_split_file(tmp_path / "s.json")["A"].known == ("ganA",)
    # the paper's configs/data/genimage.yaml reads as is
    (tmp_path / "paper.yaml").write_text(
        "split1:\n    data_path: ./dataset/GenImage\n"
        "    known_classes: ['real', 'wukong', 'Midjourney', 'VQDM', 'stable_diffusion_v_1_4']\n"
        "    unknown_classes:\n        all: ['stable_diffusion_v_1_5', 'BigGAN', 'ADM', 'glide']\n"
        "    train_collection: split1_train\n")
    p = load_split_file(tmp_path / "paper.yaml")["split1"]
    assert (p.known, p.unknown) == SPLITS[1]


@pytest.mark.parametrize("text, match", [
    ("A:\n  known: [ganA]\n", r"s\.yaml:1: split 'A' needs 'known' and 'unknown' lists"),
    ("A:\n  known: [ganA]\n  unknown: [ganB, ganA]\n", r"s\.yaml:1\)?: ganA both known and unknown"),
    ("A:\n  known: ganA\n  unknown: [ganB]\n", r"s\.yaml:2: split 'A' known must be a list"),
    ("A:\n  known: [ganA, real]\n  unknown: [ganB]\n", r"s\.yaml:2: split 'A': 'real' must come first"),
    ("A:\n  known: [ganA]\n  unknown: [ganB]\nA:\n  known: [ganB]\n  unknown: [ganA]\n",
     r"s\.yaml:4: split 'A' defined twice"),
    ("A: [ganA\n", r"s\.yaml:2: not valid YAML/JSON"),
    ("- ganA\n", r"s\.yaml:1: the split file must be a mapping"),
])
def test_split_file_errors_name_file_and_line(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(SplitError, match=match):
        load_split_file(tmp_path / "s.yaml")


def test_json_split_files_with_tabs(tmp_path: Path) -> None:
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"A": {"known": ["ganA", "ganB"], "unknown": ["ganC"]}}, indent="\t"))
    s = load_split_file(f)
    assert s["A"].known == ("ganA", "ganB") and s["A"].origin == f"{f}:2"  # YAML alone refuses the tabs
    (tmp_path / "s.yaml").write_text(f.read_text())  # JSON in a file named otherwise
    assert load_split_file(tmp_path / "s.yaml")["A"].unknown == ("ganC",)
    f.write_text('{\n\t"A": {\n\t\t"known": ["ganA"]\n\t}\n}\n')
    with pytest.raises(SplitError, match=r"s\.json:2: split 'A' needs 'known' and 'unknown' lists"):
        load_split_file(f)
    f.write_text('{\n\t"A": {\n\t\t"known": ["ganA"],\n\t}\n}\n')
    with pytest.raises(SplitError, match=r"s\.json:4: not valid JSON: Expecting property name .*\(column 2\)"):
        load_split_file(f)
    # valid JSON that YAML refuses (a raw DEL character in a string): read by json alone, no line numbers
    f.write_text('{"A": {"known": ["gan\x7fA"], "unknown": ["ganC"]}, "B": {"known": ["x"], "unknown": ["y"]}}')
    assert load_split_file(f)["A"].known == ("gan\x7fA",)
    f.write_text('{"A": {"known": ["gan\x7fA"], "unknown": ["ganC"]}, "A": {"known": ["x"], "unknown": ["y"]}}')
    with pytest.raises(SplitError, match=r"s\.json: split 'A' defined twice"):
        load_split_file(f)


def test_text_files_that_are_not_utf8_name_file_and_line(tmp_path: Path, flat: ImageList) -> None:
    (tmp_path / "s.yaml").write_bytes("A:\n  known: [ganA]\n  unknown: [gén]\n".encode("latin-1"))
    with pytest.raises(SplitError, match=r"s\.yaml:3: not UTF-8 text \(byte 0xe9 at column 14\)"):
        load_split_file(tmp_path / "s.yaml")
    d = _pose(tmp_path, flat)
    f = d / "split1_val" / "annotations" / "split1_val_out_all.txt"
    f.write_bytes(f.read_bytes() + b"./dataset/GenImage/ADM/train/ai/\xe9.png\t2\n")
    n = len(f.read_bytes().splitlines())
    with pytest.raises(SplitError, match=rf"split1_val_out_all\.txt:{n}: not UTF-8 text \(byte 0xe9 at column 33\)"):
        PoseSplits(flat, _ok(flat), d)


def test_select_splits() -> None:
    gi = builtin_splits("genimage")
    assert list(select_splits(gi, "all")) == ["1", "2", "3", "4", "5"]
    assert list(select_splits(gi, "2-4,1")) == ["2", "3", "4", "1"]
    pose = {"split1": PAPER1, "split2": PAPER1}
    assert list(select_splits(pose, "2")) == ["split2"]
    with pytest.raises(SplitError, match=r"no split 7; available: 1, 2, 3, 4, 5"):
        select_splits(gi, "7")


# ------------------------------------------------------------------------------- POSE split files
@pytest.fixture(scope="module")
def nested(tmp_path_factory) -> ImageList:
    return read_genimage(genimage_tree(tmp_path_factory.mktemp("nested"), n_train=10, n_val=4, layout="nested"))


def _pose(tmp_path: Path, flat: ImageList, **edit) -> Path:
    rows = paper_pose_rows(flat, 1)
    rows.update(edit)
    return pose_files(tmp_path / "splits", rows)


def test_pose_files_read_as_they_are(tmp_path: Path, flat: ImageList, nested: ImageList) -> None:
    d = _pose(tmp_path, flat)
    ps = PoseSplits(nested, _ok(nested), d)  # flat-layout paths under ./dataset/GenImage/, nested listing
    assert ps.names() == ["split1"] and ps.split("split1").classes == PAPER1.classes
    r = ps.rows("split1", seed=0)
    assert ps.rows("split1", seed=7) is r  # fixed rows: the seed changes nothing
    expect = paper_pose_rows(flat, 1)
    assert r.sizes() == {"train": len(expect["train"]), "val": len(expect["val"]), "test": len(expect["test"]),
                         "val_unknown": len(expect["val_out_all"]), "test_unknown": len(expect["test_out_all"])}
    for rows, labels in ((r.train, r.y_train), (r.val, r.y_val), (r.test, r.y_test)):
        assert [nested.sources[i] for i in rows] == [PAPER1.classes[y] for y in labels]
    assert [nested.sources[i] for i in r.val_unknown] == list(r.val_unknown_source)
    assert "/imagenet_ai_0424_wukong/" in nested.paths[r.train[list(r.y_train).index(1)]]
    d_desc = ps.describe("split1")
    assert d_desc["kind"] == "pose-files" and len(d_desc["files"]["test_out"]["sha256"]) == 64
    assert ps.notes() == []


def test_pose_missing_images_are_reported_never_dropped(tmp_path: Path, flat: ImageList) -> None:
    d = _pose(tmp_path, flat)
    # a feature set holding only some of the listed images (e.g. a --max-per-source sample)
    part = flat.take([i for i, s in enumerate(flat.sources) if not (s == "real" and flat.subsets[i] == "train")])
    with pytest.raises(SplitError) as e:
        PoseSplits(part, _ok(part), d)
    msg = str(e.value)
    n_missing = sum(1 for p, y in paper_pose_rows(flat, 1)["train"] + paper_pose_rows(flat, 1)["val"] if y == 0)
    assert f"{n_missing} images named by split split1 are not in this feature set" in msg
    assert msg.count("split1_train.txt:") + msg.count("split1_val.txt:") == 20
    assert f"... and {n_missing - 20} more" in msg and "--allow-missing" in msg
    with pytest.raises(SplitError, match=r"known class 'real' \(label 0\) of split split1 has no usable train"):
        PoseSplits(part, _ok(part), d, allow_missing=True)
    few = flat.take([i for i, p in enumerate(flat.paths) if not p.endswith("_train_9.png")])
    ps = PoseSplits(few, _ok(few), d, allow_missing=True)
    assert "images named by split split1 are not in this feature set" in ps.notes()[0]


def test_pose_label_offset_failed_rows_caps_and_known_test(tmp_path: Path, flat: ImageList) -> None:
    rows = paper_pose_rows(flat, 1)
    base = PoseSplits(flat, _ok(flat), pose_files(tmp_path / "a", rows)).rows("split1", 0)
    shifted = {**rows, "test_out_all": [(p, y + 5) for p, y in rows["test_out_all"]]}  # labels after known ones
    alt = PoseSplits(flat, _ok(flat), pose_files(tmp_path / "b", shifted)).rows("split1", 0)
    assert np.array_equal(base.test_unknown, alt.test_unknown)
    assert list(base.test_unknown_source) == list(alt.test_unknown_source)
    ok = _ok(flat)
    ok[base.train[:2]] = False
    r = PoseSplits(flat, ok, tmp_path / "a")
    assert not set(base.train[:2]) & set(r.rows("split1", 0).train) and "failed to decode" in r.notes()[0]
    capped = PoseSplits(flat, _ok(flat), tmp_path / "a", train_per_class=1).rows("split1", 0)
    assert np.bincount(capped.y_train).tolist() == [1] * 5
    first = {y: flat.index(p.replace("./dataset/GenImage/", "")) for p, y in reversed(rows["train"])}
    assert sorted(capped.train.tolist()) == sorted(first.values())  # the first per class, in file order
    val = PoseSplits(flat, _ok(flat), tmp_path / "a", known_test="val")
    assert np.array_equal(val.rows("split1", 0).test, base.val) and "as the paper's code does" in val.notes()[0]


def test_pose_errors_name_file_and_line(tmp_path: Path, flat: ImageList) -> None:
    rows = paper_pose_rows(flat, 1)
    f = "split1_train/annotations/split1_train.txt"

    def err(edit: dict, match: str, **kw) -> None:
        d = tmp_path / f"e{len(list(tmp_path.iterdir()))}"
        pose_files(d, {**rows, **edit})
        with pytest.raises(SplitError, match=match):
            PoseSplits(flat, _ok(flat), d, **kw)

    k = [y for _, y in rows["train"]].index(1)
    wrong = list(rows["train"])
    wrong[k] = (wrong[k][0], 2)
    err({"train": wrong}, rf"{f}:{k + 1}: label 2 = Midjourney, but wukong/train/ai/0_wukong_train_0.png is "
                          r"listed as wukong")
    err({"train": rows["train"] + [rows["train"][3]]},
        rf"listed twice within the split:\n  .*{f}:{len(rows['train']) + 1}: .* \(also .*{f}:4\)")
    err({"test": rows["test"] + [rows["train"][0]]}, r"split1_test.txt:\d+: .* \(also .*split1_train.txt:1\)")
    err({"train": [(rows["train"][0][0], 9)]}, rf"{f}:1: label 9 out of range: split split1 .* has 5 known classes")
    err({"test_out_all": [(rows["test_out_all"][0][0], 4)]}, r"label 4 out of range: .* 4 unknown classes")
    bad = tmp_path / "bad" / "split1_train" / "annotations"
    pose_files(tmp_path / "bad", rows)
    (bad / "split1_train.txt").write_text("a.png\t1\nb.png 1\n")
    with pytest.raises(SplitError, match=r"split1_train.txt:2: expected path<TAB>label, got 1"):
        PoseSplits(flat, _ok(flat), tmp_path / "bad")
    (bad / "split1_train.txt").write_text("a.png\tone\n")
    with pytest.raises(SplitError, match=r"split1_train.txt:1: expected path<TAB>label with a non-negative integer"):
        PoseSplits(flat, _ok(flat), tmp_path / "bad")


def test_pose_discovery(tmp_path: Path, flat: ImageList) -> None:
    rows = paper_pose_rows(flat, 1)
    plain = tmp_path / "plain"  # the same names directly in the folder; POSE's *_test_out.txt name
    plain.mkdir()
    for part, lines in rows.items():
        name = "split2_test_out.txt" if part == "test_out_all" else f"split2_{part}.txt"
        (plain / name).write_text("".join(f"{p}\t{y}\n" for p, y in lines))
    with pytest.raises(SplitError, match=r"no class names for split 'split2'? .* pass --split-file|class names"):
        PoseSplits(flat, _ok(flat), plain, dataset_kind="folder")
    ps = PoseSplits(flat, _ok(flat), plain, splits={"split2": Split("split2", *SPLITS[1])})
    assert ps.rows("split2", 0).sizes()["test_unknown"] == len(rows["test_out_all"])
    (plain / "split2_test.txt").unlink()
    with pytest.raises(SplitError, match=r"split split2 has no split2_test.txt \(the paper's code .* --known-test val"):
        PoseSplits(flat, _ok(flat), plain, splits={"split2": Split("split2", *SPLITS[1])})
    (tmp_path / "empty").mkdir()
    with pytest.raises(SplitError, match=r"no split files found \(expected e.g. split1_train/annotations/"):
        PoseSplits(flat, _ok(flat), tmp_path / "empty")


def test_pose_only_the_selected_splits_need_class_names(tmp_path: Path, flat: ImageList) -> None:
    for n in (1, 2):
        pose_files(tmp_path, paper_pose_rows(flat, n), f"split{n}")
    one = {"split1": Split("split1", *SPLITS[1])}  # a --split-file naming split1 only
    ps = PoseSplits(flat, _ok(flat), tmp_path, splits=one, dataset_kind="folder", only="1")
    assert ps.names() == ["split1"]
    assert ps.rows("split1", 0).sizes()["test_unknown"] == len(paper_pose_rows(flat, 1)["test_out_all"])
    with pytest.raises(SplitError, match=r"split files for 'split2' but no class names"):  # all splits: all named
        PoseSplits(flat, _ok(flat), tmp_path, splits=one, dataset_kind="folder")


# ---------------------------------------------------------------------------------- end to end
def _cli(args: list[str]) -> tuple[int, str]:
    res = CliRunner().invoke(main, args)
    return res.exit_code, res.output


def test_cli_features_and_probe_with_split_files(tmp_path: Path, tiny_checkpoint: Path) -> None:
    root = genimage_tree(tmp_path / "GenImage", n_train=6, n_val=2, layout="mixed", images=True)
    listing = read_genimage(root)
    splits_dir = pose_files(tmp_path / "paper-splits", paper_pose_rows(listing, 1, per_class=4))
    feat = ["features", "--dataset", "genimage", "--root", str(root), "--model", "attrib-tiny", "--pretrained",
            str(tiny_checkpoint), "--cache", str(tmp_path / "cache"), "--workers", "0", "--quiet"]
    code, out = _cli(feat + ["--splits-dir", str(splits_dir)])  # extract exactly what the split files name
    assert code == 0, out
    fs = FeatureSet.open(out.strip().splitlines()[-1])
    n_listed = sum(len(v) for v in paper_pose_rows(listing, 1, per_class=4).values())
    assert fs.n_images == n_listed < len(listing)
    probe = ["probe", "--features", str(fs.path), "--layers", "3", "--quiet"]
    code, out = _cli(probe + ["--splits-dir", str(splits_dir), "--out", str(tmp_path / "r1")])
    assert code == 0, out
    lines = [json.loads(x) for x in (tmp_path / "r1" / "results.jsonl").read_text().splitlines()]
    assert [x["split"] for x in lines] == ["split1"] and lines[0]["classes"] == list(PAPER1.classes)
    assert lines[0]["n"]["train"] == 5 * 3 and lines[0]["n"]["test_unknown"] == 4 * 2

    code, out = _cli(feat + ["--max-per-source", "5"])  # a sample lacks some listed images: reported, refused
    assert code == 0, out
    sampled = out.strip().splitlines()[-1]
    code, out = _cli(["probe", "--features", sampled, "--splits-dir", str(splits_dir), "--out", str(tmp_path / "r2")])
    assert code == 2 and "images named by split split1 are not in this feature set" in out

    yaml_file = tmp_path / "mine.yaml"
    yaml_file.write_text("A:\n  known: [ADM, glide]\n  unknown: [VQDM, wukong]\n")
    code, out = _cli(["probe", "--features", sampled, "--split-file", str(yaml_file), "--layers", "3",
                      "--train-per-class", "all", "--out", str(tmp_path / "r3"), "--quiet"])
    assert code == 0, out
    line = json.loads((tmp_path / "r3" / "results.jsonl").read_text().splitlines()[0])
    assert line["split"] == "A" and line["classes"] == ["real", "ADM", "glide"]
    assert line["unknown"] == ["VQDM", "wukong"]
    yaml_file.write_text("A:\n  known: [ADM, DALLE]\n  unknown: [VQDM]\n")
    code, out = _cli(["probe", "--features", sampled, "--split-file", str(yaml_file), "--out", str(tmp_path / "r4")])
    assert code == 2 and f"split A ({yaml_file}:1): source(s) DALLE have no usable images" in out
    # files in another encoding than UTF-8: a clear error, no traceback
    yaml_file.write_bytes("# générateurs\nA:\n  known: [ADM]\n  unknown: [VQDM]\n".encode("latin-1"))
    code, out = _cli(["probe", "--features", sampled, "--split-file", str(yaml_file), "--out", str(tmp_path / "r5")])
    assert code == 2 and f"{yaml_file}:1: not UTF-8 text (byte 0xe9" in out and "Traceback" not in out
    train = splits_dir / "split1_train" / "annotations" / "split1_train.txt"
    train.write_bytes(b"./dataset/GenImage/ADM/train/ai/\xe9.png\t1\n")
    code, out = _cli(["probe", "--features", str(fs.path), "--splits-dir", str(splits_dir),
                      "--out", str(tmp_path / "r6")])
    assert code == 2 and f"{train}:1: not UTF-8 text (byte 0xe9" in out and "Traceback" not in out
