"""Several feature sets as one image list (attrib.union), and training on one feature set while
evaluating on another (attrib.probe.evalrows): same numbers as one feature set, refusals naming the field,
missing evaluation images listed, names across datasets, results and reports recording both sets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from attrib.data.sampling import SampledSplits
from attrib.data.splits import Split, SplitError, builtin_splits
from attrib.probe.evalrows import EvalFeatureError
from attrib.probe.options import StudyError, parse_layers
from attrib.probe.results import read_results
from attrib.probe.study import StudyConfig, run_study
from attrib.store import FeatureSet
from attrib.union import FeatureUnion, UnionError, open_features, split_images

from synthetic_features import copy_feature_set, make_feature_set, register

# what may differ between the lines of two studies of the same images: the features' names and timings
NAMES = ("feature_set", "feature_hash", "features", "eval_features", "eval_feature_hash", "label", "seconds")


@pytest.fixture(scope="module")
def fs(tmp_path_factory) -> FeatureSet:
    return make_feature_set(tmp_path_factory.mktemp("full"))


@pytest.fixture(scope="module")
def halves(fs, tmp_path_factory) -> tuple[FeatureSet, FeatureSet]:
    """The images of ``fs`` in two feature sets: real + two generators, and the other generators."""
    first = {"real", *sorted(set(fs.images.sources) - {"real"})[:2]}
    rows_a = [i for i, s in enumerate(fs.images.sources) if s in first]
    rows_b = [i for i, s in enumerate(fs.images.sources) if s not in first]
    d = tmp_path_factory.mktemp("halves")
    return copy_feature_set(fs, d / "a", rows_a), copy_feature_set(fs, d / "b", rows_b)


@pytest.fixture(autouse=True)
def _registered(monkeypatch):
    register(monkeypatch)


def _cfg(images_of, ok, seeds: int = 1, splits=("1",), layers: str = "1;concat:1,2") -> StudyConfig:
    source = SampledSplits(images_of, ok, {k: v for k, v in builtin_splits("demo").items() if k in splits})
    return StudyConfig(splits=source, layers=parse_layers(layers, 3), heads=["centroid"],
                       scores=["msp", "maxlogit_t"], shots=[3, None], seeds=seeds)


def _study(fs, out: Path, eval_fs=None, **kw) -> list[dict]:
    ok, _ = fs.status()
    run_study(fs, _cfg(split_images(fs, builtin_splits("demo").values()), ok, **kw), out, progress=False,
              eval_fs=eval_fs)
    return read_results(out)


def _numbers(lines: list[dict]) -> dict[tuple, dict]:
    return {(d["split"], d["layer"], d["score"], d["shots"], d["seed"]): {k: v for k, v in d.items() if k not in NAMES}
            for d in lines}


# ------------------------------------------------------------------------------------- the union
def test_union_reads_like_the_feature_set_holding_the_same_images(fs, halves) -> None:
    a, b = halves
    u = FeatureUnion([b, a])
    assert u.images.paths == fs.images.paths and u.images.sources == fs.images.sources
    assert u.images.subsets == fs.images.subsets and u.images.sha256() == fs.images.sha256()
    assert u.id == f"{a.id}+{b.id}" and u.n_images == fs.n_images and (u.n_blocks, u.width) == (fs.n_blocks, fs.width)
    ok_u, err_u = u.status()
    ok_f, err_f = fs.status()
    assert np.array_equal(ok_u, ok_f) and err_u == err_f and (~ok_u).sum() == 3
    rows = np.array([70, 3, 0, 200, 71, 69])
    for layer in (0, 2, -1):
        assert np.array_equal(u.block(layer, rows), fs.block(layer, rows))
    assert np.array_equal(u.block(1), fs.block(1)) and np.array_equal(u.embed(rows), fs.embed(rows))
    paths = [fs.images.paths[r] for r in rows]
    assert np.array_equal(u.rows(paths), fs.rows(paths))
    with pytest.raises(KeyError, match="1 path"):
        u.rows(["nope.png"])
    assert u.manifest.kind == "demo" and u.manifest.dataset == "demo" and u.manifest.root == fs.manifest.root
    assert isinstance(open_features([str(a.path)]), FeatureSet)
    assert open_features([str(b.path), str(a.path), str(b.path)]).id == u.id


def test_union_reads_in_bounded_pieces_in_any_row_order(fs, halves, monkeypatch) -> None:
    """Reads go part by part in pieces of at most READ_CHUNK_ROWS rows (the shared reader of unions and
    grown sets, attrib.partread), scattered back into the caller's order, repeats included."""
    import attrib.partread

    monkeypatch.setattr(attrib.partread, "READ_CHUNK_ROWS", 4)
    u = FeatureUnion(list(halves))
    rows = np.random.default_rng(0).permutation(fs.n_images)[:37]
    rows = np.concatenate([rows, rows[:5]])
    assert np.array_equal(u.block(2, rows), fs.block(2, rows)) and np.array_equal(u.embed(rows), fs.embed(rows))
    assert np.array_equal(u.block(0), fs.block(0))
    stored = u.block(2, rows, dtype="float16")  # as the shards hold them (a study's feature cache)
    assert stored.dtype == np.float16 and np.array_equal(stored, fs.block(2, rows, dtype="float16"))
    assert u.block(1, []).shape == (0, fs.width)
    with pytest.raises(IndexError, match="out of range"):
        u.block(0, [fs.n_images])
    with pytest.raises(IndexError, match="block 3 out of range"):
        u.block(3, rows)


def test_study_over_two_feature_sets_equals_study_over_one(fs, halves, tmp_path) -> None:
    one = _study(fs, tmp_path / "one", seeds=2, splits=("1", "2"))
    two = _study(FeatureUnion(list(halves)), tmp_path / "two", seeds=2, splits=("1", "2"))
    assert len(one) == len(two) == 2 * 2 * 2 * 2 * 2
    assert _numbers(one) == _numbers(two)
    assert all(d["features"] == sorted(h.id for h in halves) and d["eval_features"] == d["features"] for d in two)
    assert all(d["features"] == [fs.id] == d["eval_features"] for d in one)


def test_union_refuses_other_features_naming_the_field(fs, halves, tmp_path) -> None:
    a, _ = halves
    rows = [i for i, s in enumerate(fs.images.sources) if s not in set(a.images.sources)]
    for field, value in (("preprocess", {"name": "paper"}), ("view", "jpeg:75"), ("model", "other")):
        other = copy_feature_set(fs, tmp_path / field, rows, **{field: value})
        with pytest.raises(UnionError, match=rf"(?s)hold different features.*- {field}\b"):
            FeatureUnion([a, other])


def test_union_refuses_duplicate_paths_naming_both_feature_sets(fs, halves, tmp_path) -> None:
    a, _ = halves
    overlap = copy_feature_set(fs, tmp_path / "overlap", range(0, 40))  # images of a generator in a
    assert a.id < overlap.id  # parts are read in id order
    with pytest.raises(UnionError, match=rf"40 image path\(s\) are in two feature sets(?s:.*){fs.images.paths[0]} "
                                         rf"\(in {a.id} and {overlap.id}\)"):
        FeatureUnion([a, overlap])


def test_union_of_datasets_names_shared_sources_by_dataset(fs, tmp_path) -> None:
    real_rows = [i for i, s in enumerate(fs.images.sources) if s == "real"]
    gens = sorted(set(fs.images.sources) - {"real"})
    mine = copy_feature_set(fs, tmp_path / "mine", [i for i, s in enumerate(fs.images.sources) if s != gens[-1]])
    theirs = copy_feature_set(fs, tmp_path / "theirs", real_rows + [i for i, s in enumerate(fs.images.sources)
                                                                    if s in gens[-2:]], dataset="other")
    u = FeatureUnion([mine, theirs])
    assert u.qualified and u.manifest.dataset == "demo+other" and u.manifest.root == ""
    assert {p.split("/")[0] for p in u.images.paths} == {"demo", "other"}
    counts = {s for s, _ in u.images.counts()}
    # real and gens[-2] are in both datasets: apart; gens[-1] only in `other`: its own name
    assert {"demo/real", "other/real", f"demo/{gens[-2]}", f"other/{gens[-2]}", gens[-1], gens[0]} <= counts
    assert "real" not in counts
    # a split naming the bare shared name takes both datasets' images as one source; dataset/source one
    sp = Split("x", (gens[0], f"other/{gens[-2]}"), (gens[-1],))
    named = u.images_named([sp])
    n = named.counts()
    assert sum(c for (s, _), c in n.items() if s == "real") == 2 * len(real_rows)
    assert (f"other/{gens[-2]}", "train") in n and (f"demo/{gens[-2]}", "train") in n
    assert named.paths == u.images.paths
    ok, _ = u.status()
    rows = SampledSplits(named, ok, {"x": sp}).rows("x", 0)
    assert {named.paths[r].split("/")[0] for r in rows.train[rows.y_train == 0]} == {"demo", "other"}
    assert {named.paths[r].split("/")[0] for r in rows.test_unknown} == {"other"}
    with pytest.raises(SplitError, match="other/real and also the bare name"):
        u.images_named([Split("y", (gens[0],), ("other/real",))])


# ------------------------------------------------------------------------ train / eval feature sets
def test_eval_features_supply_validation_and_test_rows(fs, tmp_path) -> None:
    """Training rows come from --features, every other row from --eval-features, matched by path: with the
    other rows garbage in each, the study equals the study of the clean feature set."""
    plain = _study(fs, tmp_path / "plain")
    rows = _cfg(fs.images, fs.status()[0]).splits.rows("1", 0)
    train = np.unique(rows.train)

    def garbage(keep_mask):
        def change(r, cls):
            out = cls.copy()
            bad = ~keep_mask(r)
            out[bad] = np.random.default_rng(1).normal(size=out[bad].shape) * 50
            return out
        return change

    t = copy_feature_set(fs, tmp_path / "t", change=garbage(lambda r: np.isin(r, train)))
    # the evaluation set: another preprocessing and view, its rows in another order (fewer images: no
    # image of the training subset but those also validated on), garbage where it holds training images
    e_rows = np.setdiff1d(np.arange(fs.n_images), train[::2])
    e = copy_feature_set(fs, tmp_path / "e", e_rows, change=garbage(lambda r: ~np.isin(r, train)),
                         preprocess={"name": "paper", "size": 8}, view="jpeg:75")
    mixed = _study(t, tmp_path / "mixed", eval_fs=e)
    assert _numbers(mixed) == _numbers(plain)
    assert all(d["features"] == [t.id] and d["eval_features"] == [e.id] for d in mixed)
    assert all(d["eval_feature_hash"] != d["feature_hash"] for d in mixed)
    assert _numbers(_study(t, tmp_path / "alone")) != _numbers(plain)  # the garbage is read without eval


@pytest.mark.slow
def test_eval_study_in_worker_processes_equals_one_process(fs, halves, tmp_path) -> None:
    e = copy_feature_set(fs, tmp_path / "e", change=lambda r, cls: cls + 0.5, view="jpeg:75")
    union = FeatureUnion(list(halves))
    ok, _ = union.status()
    lines = {}
    for jobs in (1, 2):
        cfg = _cfg(union.images, ok, seeds=2)
        cfg.jobs = jobs
        run_study(union, cfg, tmp_path / f"j{jobs}", progress=False, eval_fs=e)
        lines[jobs] = read_results(tmp_path / f"j{jobs}")
    assert _numbers(lines[1]) == _numbers(lines[2]) and len(lines[1]) == 2 * 2 * 2 * 2
    assert _numbers(lines[1]) != _numbers(_study(union, tmp_path / "plain", seeds=2))


def test_eval_features_of_another_backbone_are_refused_naming_the_field(fs, tmp_path) -> None:
    for field, value in (("model", "ViT-L-14"), ("weights", "openai"), ("quick_gelu", True), ("family", "timm")):
        other = copy_feature_set(fs, tmp_path / field, range(60), **{field: value})
        with pytest.raises(EvalFeatureError, match=rf"(?s)was not extracted by the backbone.*- {field}: "):
            _study(fs, tmp_path / f"out-{field}", eval_fs=other)
        assert not (tmp_path / f"out-{field}" / "results.jsonl").exists()


def test_missing_or_failed_eval_images_are_listed_and_stop_the_run(fs, tmp_path) -> None:
    rows = _cfg(fs.images, fs.status()[0]).splits.rows("1", 0)
    test = np.sort(rows.test)
    lacking = np.setdiff1d(np.arange(fs.n_images), test[:25])
    e = copy_feature_set(fs, tmp_path / "e", lacking)
    with pytest.raises(EvalFeatureError, match=r"25 image\(s\) the splits validate or test on") as err:
        _study(fs, tmp_path / "out", eval_fs=e)
    msg = str(err.value)
    assert f"{fs.images.paths[test[0]]}: not in it" in msg and "... and 5 more" in msg
    assert msg.count(": not in it") == 20 and not (tmp_path / "out" / "results.jsonl").exists()

    failed = copy_feature_set(fs, tmp_path / "f")
    import h5py

    r = int(test[0])  # marked as failed in the evaluation set only
    with h5py.File(failed.shard_path(r // failed.shard_size), "r+") as f:
        f["ok"][r % failed.shard_size] = False
    with pytest.raises(EvalFeatureError, match=rf"1 image\(s\)(?s:.*){fs.images.paths[test[0]]}: failed to decode"):
        _study(fs, tmp_path / "out2", eval_fs=FeatureSet.open(failed.path))


@pytest.mark.slow
def test_results_with_other_eval_features_are_another_study(fs, tmp_path) -> None:
    e = copy_feature_set(fs, tmp_path / "e", preprocess={"name": "paper"})
    out = tmp_path / "out"
    first = _study(fs, out, eval_fs=e, layers="1")
    assert first and all(d["eval_features"] == [e.id] for d in first)
    assert len(_study(fs, out, eval_fs=e, layers="1")) == len(first)  # resumed: nothing new
    with pytest.raises(StudyError, match=rf"evaluated on feature set {e.id} .*not {fs.id}"):
        _study(fs, out, layers="1")
    e2 = copy_feature_set(fs, tmp_path / "e2", view="jpeg:75")
    with pytest.raises(StudyError, match=rf"evaluated on feature set {e.id} .*not {e2.id}"):
        _study(fs, out, eval_fs=e2, layers="1")
    plain = tmp_path / "plain"
    _study(fs, plain, layers="1")
    with pytest.raises(StudyError, match=rf"evaluated on feature set {fs.id} .*not {e.id}"):
        _study(fs, plain, eval_fs=e, layers="1")
    from attrib.probe.report import write_report

    md = (write_report(out).paths["markdown"]).read_text()
    assert f"Feature set(s): {fs.id}" in md and f"(`--eval-features`): {e.id}" in md
    assert "(`--eval-features`): the same feature set(s)" in write_report(plain).paths["markdown"].read_text()


def test_old_lines_without_eval_fields_read_as_evaluated_on_their_feature_set(tmp_path) -> None:
    from attrib.probe.results import check_compatible

    old = [{"feature_set": "A", "feature_hash": "h", "split": "1", "seed": 0, "head": "logreg"}]
    check_compatible(old, "A", "h", {}, {}, tmp_path / "results.jsonl")
    check_compatible(old, "A", "h", {}, {}, tmp_path / "results.jsonl", eval_features=["A"], eval_hash="h")
    with pytest.raises(StudyError, match="evaluated on feature set A \\(h\\), not V \\(v\\)"):
        check_compatible(old, "A", "h", {}, {}, tmp_path / "results.jsonl", eval_features=["V"], eval_hash="v")


def test_save_head_trains_on_features_and_calibrates_on_eval_features(fs, tmp_path) -> None:
    from attrib.probe.choose import save_chosen_head
    from attrib.probe.persist import load_head

    e = copy_feature_set(fs, tmp_path / "e", preprocess={"name": "paper"}, view="jpeg:75")
    ok, _ = fs.status()
    cfg = _cfg(fs.images, ok, layers="2")
    cfg.scores = ["msp"]
    notes = []
    summary = save_chosen_head(fs, cfg, tmp_path / "head", log=notes.append, eval_fs=e)
    assert summary["features"] == [fs.id] and summary["eval_features"] == [e.id]
    assert any("threshold from the validation images of" in n for n in notes)
    head = load_head(tmp_path / "head")
    assert head.feature_set == e.id and head.manifest.view == "jpeg:75"
    assert head.extraction_mismatch(e.manifest) == [] and head.extraction_mismatch(fs.manifest) != []
    # the threshold accepts 95% of the known validation images of the evaluation features
    rows = cfg.splits.rows("1", 0)
    s_val = head.score_samples(e.block(2, e.rows([fs.images.paths[r] for r in rows.val])))
    assert np.isclose(np.mean(s_val >= head.threshold), summary["validation"]["tpr"])


# ---------------------------------------------------------------------------------- command line
@pytest.mark.slow
def test_cli_probe_takes_several_features_and_eval_features(fs, halves, tmp_path) -> None:
    from click.testing import CliRunner

    from attrib.cli import main

    a, b = halves
    e = copy_feature_set(fs, tmp_path / "e", preprocess={"name": "paper"})
    args = ["probe", "--features", str(a.path), "--features", str(b.path), "--eval-features", str(e.path),
            "--splits", "1", "--layers", "2", "--heads", "ncm", "--scores", "msp", "--quiet",
            "--out", str(tmp_path / "out")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert lines and lines[0]["features"] == sorted([a.id, b.id]) and lines[0]["eval_features"] == [e.id]
    bad = copy_feature_set(fs, tmp_path / "bad", model="other")
    res = CliRunner().invoke(main, args[:5] + ["--eval-features", str(bad.path)] + args[7:])
    assert res.exit_code == 2 and "- model: --features has 'synthetic', --eval-features has 'other'" in res.output
