"""--save-scores: one .npz per result line, named from its key and recorded as scores_file, loadable
without pickle; the line's metrics recomputed from the saved arrays are the line's numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from attrib.data.sampling import SampledSplits
from attrib.data.splits import builtin_splits
from attrib.probe import metrics as M
from attrib.probe.options import parse_layers
from attrib.probe.results import read_results
from attrib.probe.scorefile import ARRAYS, read_scores, scores_name, write_scores
from attrib.probe.study import StudyConfig, run_study
from attrib.store import FeatureSet

from synthetic_features import make_feature_set, register


@pytest.fixture(scope="module")
def fs(tmp_path_factory) -> FeatureSet:
    return make_feature_set(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(autouse=True)
def _registered(monkeypatch):
    register(monkeypatch)


def _cfg(fs: FeatureSet, **kw) -> StudyConfig:
    ok, _ = fs.status()
    source = SampledSplits(fs.images, ok, {k: v for k, v in builtin_splits("demo").items() if k in ("1", "2")})
    base = dict(splits=source, layers=parse_layers("0;concat:1,2", fs.n_blocks), heads=["centroid"],
                scores=["msp", "centroid_dist"], shots=[None], seeds=1, save_scores=True)
    base.update(kw)
    return StudyConfig(**base)


def test_saved_scores_give_back_every_number_of_their_line(fs: FeatureSet, tmp_path: Path) -> None:
    run = run_study(fs, _cfg(fs), tmp_path, progress=False)
    lines = read_results(tmp_path)
    assert run.written == len(lines) == 2 * 2 * 2 and not run.errors
    assert len({d["scores_file"] for d in lines}) == len(lines)
    for d in lines:
        path = tmp_path / d["scores_file"]
        assert path.parent == tmp_path / "scores" and path.suffix == ".npz"
        with np.load(path, allow_pickle=False) as z:  # numbers and fixed-width strings only
            assert sorted(z.files) == sorted(ARRAYS)
            a = {k: z[k] for k in z.files}
        assert a["classes"].tolist() == d["classes"] and a["unknown_source"].dtype.kind == "U"
        assert {k: a[k].dtype for k in ("y_true", "y_pred", "pred_unknown", "s_known", "s_unknown")} == {
            "y_true": np.int64, "y_pred": np.int64, "pred_unknown": np.int64, "s_known": np.float64,
            "s_unknown": np.float64}
        assert len(a["y_true"]) == len(a["y_pred"]) == len(a["s_known"]) == len(a["paths_known"]) == d["n"]["test"]
        assert len(a["s_unknown"]) == len(a["pred_unknown"]) == len(a["paths_unknown"]) == d["n"]["test_unknown"]
        correct = a["y_true"] == a["y_pred"]
        assert M.accuracy(a["y_true"], a["y_pred"]) == d["accuracy"]
        assert M.auroc(a["s_known"], a["s_unknown"]) == d["auroc"]
        assert M.oscr(a["s_known"], correct, a["s_unknown"]) == d["oscr"]
        assert M.auroc_paper(a["s_known"], a["s_unknown"]) == d["auroc_paper"]
        assert M.oscr_paper(a["s_known"], correct, a["s_unknown"]) == d["oscr_paper"]
        assert M.fpr_at_tpr(a["s_known"], a["s_unknown"], d["config"]["tpr"]) == d["fpr95"]
        assert M.auroc_per_unknown(a["s_known"], a["s_unknown"], a["unknown_source"]) == d["auroc_per_unknown"]
        # the rows are the split's: their sources and paths, relative to the dataset root
        src = dict(zip(fs.images.paths, fs.images.sources))
        assert all(src[p] == d["classes"][c] for p, c in zip(a["paths_known"], a["y_true"]))
        assert [src[p] for p in a["paths_unknown"]] == a["unknown_source"].tolist()
        assert not Path(a["paths_known"][0]).is_absolute()
    assert not list((tmp_path / "scores").glob(".*"))  # no temporary file left behind


def test_lines_already_done_are_not_redone_and_the_user_is_told(fs: FeatureSet, tmp_path: Path) -> None:
    cfg = _cfg(fs, layers=[(0,)], scores=["msp"], save_scores=False)
    run_study(fs, cfg, tmp_path, progress=False)
    messages: list[str] = []
    cfg = _cfg(fs, layers=[(0,)], scores=["msp", "centroid_dist"])
    run = run_study(fs, cfg, tmp_path, progress=False, log=messages.append)
    assert run.written == 2 and run.skipped_done == 2
    assert any("2 line(s) already in" in m and "use a new --out" in m for m in messages)
    saved = [d for d in read_results(tmp_path) if "scores_file" in d]
    assert sorted(d["score"] for d in saved) == ["centroid_dist", "centroid_dist"]


def test_file_names_are_safe_readable_and_distinct(tmp_path: Path) -> None:
    key = ("split1", "concat:9,10", "knn-paper", "msp", "all", 0, "paper", "")
    name = scores_name(key)
    assert name.startswith("split=split1_layer=concat-9-10_knn-paper+msp_shots=all_seed=0_paper-")
    assert name.endswith(".npz")
    assert "/" not in name and ":" not in name and "," not in name
    assert scores_name(key[:-1] + ('{"knn.k":20}',)) != name
    assert scores_name(("1", "concat:9,10") + key[2:]) != scores_name(("1", "concat-9-10") + key[2:])
    empty = dict(classes=["real", "a"], y_true=[], y_pred=[], s_known=[], s_unknown=[], pred_unknown=[],
                 unknown_source=[], paths_known=[], paths_unknown=[])
    rel = write_scores(tmp_path, key, **empty)  # a split without unknown test rows still saves
    assert rel == f"scores/{name}" and read_scores(tmp_path / rel)["s_unknown"].shape == (0,)
    with pytest.raises(ValueError, match="missing"):
        write_scores(tmp_path, key, classes=["a"])
