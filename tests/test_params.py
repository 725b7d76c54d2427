"""--param NAME.KEY=VALUE: parsing, checks against the registries (valid keys named), the values reaching
the heads and scorers of a study, recorded in each line's config and key, and Mahalanobis / RMDS with the
plain (unshrunk, possibly singular) pooled covariance of the published definitions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from attrib.data.sampling import SampledSplits
from attrib.data.splits import builtin_splits
from attrib.probe.heads import HEADS
from attrib.probe.options import StudyError, parse_layers
from attrib.probe.params import line_params, params_label, parse_param, parse_value, resolve_params
from attrib.probe.report import write_report
from attrib.probe.results import read_results
from attrib.probe.scorers import RMDS, SCORERS, Mahalanobis
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
    source = SampledSplits(fs.images, ok, {"1": builtin_splits("demo")["1"]})
    base = dict(splits=source, layers=parse_layers("0", fs.n_blocks), heads=["centroid"], scores=["msp"],
                shots=[None], seeds=1)
    base.update(kw)
    return StudyConfig(**base)


# ------------------------------------------------------------------------------------------ grammar
def test_values_are_read_as_int_float_bool_none_or_text() -> None:
    assert [parse_value(v) for v in ("20", "-3", "0", "0.1", "1e-3", "True", "false", "none", "NULL", "auto")] == [
        20, -3, 0, 0.1, 1e-3, True, False, None, None, "auto"]
    assert isinstance(parse_value("20"), int) and isinstance(parse_value("0.0"), float)
    assert parse_param("mahalanobis.shrinkage=0") == ("mahalanobis", "shrinkage", 0)
    assert parse_param(" knn-paper.k = 7 ") == ("knn-paper", "k", 7)
    assert parse_param("gauss.shrinkage=0.1") == ("gauss", "shrinkage", 0.1)
    for bad in ("mahalanobis", "shrinkage=0", "mahalanobis.shrinkage", "mahalanobis.shrinkage=", ".k=1", "knn.=1"):
        with pytest.raises(StudyError, match=rf"--param '{bad}': use NAME.KEY=VALUE"):
            parse_param(bad)


def test_names_and_keys_are_checked_against_the_registries() -> None:
    def resolve(settings, heads=("logreg",), scores=("msp", "mahalanobis")):
        return resolve_params([parse_param(s) for s in settings], list(heads), list(scores), HEADS, SCORERS)

    assert resolve(["mahalanobis.shrinkage=0"]) == ({}, {"mahalanobis": {"shrinkage": 0}})
    assert resolve(["logreg.max_iter=50", "logreg.max_iter=60"]) == ({"logreg": {"max_iter": 60}}, {})  # last wins
    with pytest.raises(StudyError, match="'mahalanobs' is neither a head .* nor a score"):
        resolve(["mahalanobs.shrinkage=0"])
    with pytest.raises(StudyError, match=r"rmds is not among --heads \(logreg\) or --scores \(msp, mahalanobis\)"):
        resolve(["rmds.shrinkage=0"])
    with pytest.raises(StudyError) as bad:
        resolve(["mahalanobis.shrink=0"])
    assert "the score mahalanobis (Mahalanobis) takes shrinkage" in str(bad.value)
    with pytest.raises(StudyError, match="the score msp .MSP. takes no parameter"):
        resolve(["msp.temperature=2"])
    # a head's path is model selection's: --grid sets it, and the message says so
    with pytest.raises(StudyError) as bad:
        resolve(["logreg.C=1"])
    assert "takes standardize, tol, max_iter, dtype" in str(bad.value) and "--grid C=V1,V2" in str(bad.value)


def test_a_name_that_is_both_a_head_and_a_score_sets_whichever_has_the_key() -> None:
    settings = [parse_param("knn.k=20")]
    assert resolve_params(settings, ["knn"], ["knn"], HEADS, SCORERS) == ({}, {"knn": {"k": 20}})
    assert resolve_params([parse_param("knn.temperature=0.5")], ["knn"], ["knn"], HEADS, SCORERS) == (
        {"knn": {"temperature": 0.5}}, {})
    with pytest.raises(StudyError, match=r"the head knn \(KNNHead\) takes temperature \(k is its path"):
        resolve_params(settings, ["knn"], ["msp"], HEADS, SCORERS)
    both = line_params("knn", "knn", {"knn": {"temperature": 0.5}}, {"knn": {"k": 20}})
    assert both == {"knn.k": 20, "knn.temperature": 0.5} and params_label(both) == "knn.k=20, knn.temperature=0.5"
    assert params_label({"x.on": True, "x.dim": None}) == "x.dim=none, x.on=true" and params_label({}) == ""


# ----------------------------------------------------------------------------------------- studies
@pytest.mark.slow
def test_params_reach_the_estimators_and_the_lines(fs: FeatureSet, tmp_path: Path) -> None:
    cfg = _cfg(fs, heads=["centroid"], scores=["msp", "mahalanobis"],
               params=[parse_param("centroid.note=y"), parse_param("mahalanobis.shrinkage=0")])
    run = run_study(fs, cfg, tmp_path, progress=False)
    assert run.written == 2 and not run.errors
    lines = {d["score"]: d for d in read_results(tmp_path)}
    assert lines["msp"]["config"]["params"] == {"centroid.note": "y"}
    assert lines["mahalanobis"]["config"]["params"] == {"centroid.note": "y", "mahalanobis.shrinkage": 0}
    assert lines["msp"]["config"]["head_params"]["note"] == "y"
    assert lines["mahalanobis"]["config"]["score_params"]["shrinkage"] == 0
    # the unshrunk scorer gives other numbers than the default Ledoit-Wolf one: a new line, not a "done" one
    run = run_study(fs, _cfg(fs, heads=["centroid"], scores=["mahalanobis"],
                             params=[parse_param("centroid.note=y")]), tmp_path, progress=False)
    assert run.written == 1 and run.skipped_done == 0
    maha = [d for d in read_results(tmp_path) if d["score"] == "mahalanobis"]
    assert {d["config"]["score_params"]["shrinkage"] for d in maha} == {0, "auto"}
    assert maha[0]["auroc"] != maha[1]["auroc"]
    # the same settings again: everything is done
    again = run_study(fs, cfg, tmp_path, progress=False)
    assert again.written == 0 and again.skipped_done == 2
    # the table tells the settings apart
    rep = write_report(tmp_path)
    assert "| params |" in rep.main
    assert "| 0 | centroid | mahalanobis | all | clean | centroid.note=y, mahalanobis.shrinkage=0 | 1 |" in rep.main
    assert "| 0 | centroid | mahalanobis | all | clean | centroid.note=y | 1 |" in rep.main


def test_a_bad_setting_stops_the_study_before_it_starts(fs: FeatureSet, tmp_path: Path) -> None:
    with pytest.raises(StudyError, match="takes shrinkage"):
        run_study(fs, _cfg(fs, scores=["mahalanobis"], params=[parse_param("mahalanobis.shrinkag=0")]),
                  tmp_path, progress=False)
    assert not (tmp_path / "results.jsonl").exists()


def test_a_device_the_machine_cannot_use_stops_the_study_before_it_starts(fs: FeatureSet, tmp_path: Path) -> None:
    """``--param logreg.device=...`` reaches the logistic probe's solver; a device torch does not see
    would fail every line one by one, so the study refuses it first, saying what to use."""
    with pytest.raises(StudyError, match=r"--param for logreg: device 'gpu': use 'cpu', 'cuda', 'cuda:N' or 'auto'"):
        run_study(fs, _cfg(fs, heads=["logreg"], params=[parse_param("logreg.device=gpu")]), tmp_path,
                  progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(StudyError, match="--param for logreg: device 'cuda': torch sees no CUDA device"):
            run_study(fs, _cfg(fs, heads=["logreg"], params=[parse_param("logreg.device=cuda")]), tmp_path,
                      progress=False)
    assert not (tmp_path / "results.jsonl").exists()
    run = run_study(fs, _cfg(fs, heads=["logreg"], params=[parse_param("logreg.device=auto")]), tmp_path,
                    progress=False)
    assert run.written == 1 and not run.errors
    assert read_results(tmp_path)[0]["config"]["head_params"]["device"] == "auto"


@pytest.mark.slow
def test_probe_command_takes_params_and_saves_scores(fs: FeatureSet, tmp_path: Path) -> None:
    from attrib.cli import main

    args = ["probe", "--features", str(fs.path), "--splits", "1", "--layers", "2", "--heads", "ncm",
            "--scores", "rmds", "--quiet", "--out", str(tmp_path)]
    out = CliRunner().invoke(main, args + ["--param", "rmds.shrinkage=0", "--param", "ncm.temperature=0.5",
                                           "--save-scores"])
    assert out.exit_code == 0, out.output
    (line,) = read_results(tmp_path)
    assert line["config"]["params"] == {"ncm.temperature": 0.5, "rmds.shrinkage": 0}
    assert (tmp_path / line["scores_file"]).is_file()
    out = CliRunner().invoke(main, args + ["--param", "rmds.k=3"])
    assert out.exit_code == 2 and "Error: --param rmds.k=3: the score rmds (RMDS) takes shrinkage" in out.output
    out = CliRunner().invoke(main, args + ["--param", "rmds"])
    assert out.exit_code == 2 and "--param 'rmds': use NAME.KEY=VALUE" in out.output


# ---------------------------------------------------------------------- the plain pooled covariance
def test_mahalanobis_and_rmds_without_shrinkage_use_the_pseudo_inverse() -> None:
    """Fewer training rows than dimensions: the pooled covariance is singular. shrinkage=0 uses its
    pseudo-inverse, as the published code (scikit-learn's EmpiricalCovariance, pinvh) does."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(9, 12))
    y = np.repeat([0, 1, 2], 3)
    Q = rng.normal(size=(6, 12))
    means = np.stack([X[y == c].mean(0) for c in range(3)])
    R = X - means[y]
    P = np.linalg.pinv(R.T @ R / len(X), hermitian=True)
    expected = -np.min([np.einsum("ij,jk,ik->i", Q - m, P, Q - m) for m in means], axis=0)
    m = Mahalanobis(shrinkage=0).fit(X, y)
    assert m.shrinkage_ == 0.0
    np.testing.assert_allclose(m.score_samples(Q), expected, rtol=1e-6)
    mu = X.mean(0)
    P0 = np.linalg.pinv((X - mu).T @ (X - mu) / len(X), hermitian=True)
    background = np.einsum("ij,jk,ik->i", Q - mu, P0, Q - mu)
    r = RMDS(shrinkage=0).fit(X, y)
    np.testing.assert_allclose(r.score_samples(Q), -np.min([np.einsum("ij,jk,ik->i", Q - m_, P, Q - m_)
                                                             for m_ in means], axis=0) + background, rtol=1e-6)
    assert np.isfinite(r.score_samples(Q)).all()
