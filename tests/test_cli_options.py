"""The command line's option grammars (attrib/cli_options.py) and its choices (attrib/choices.py): the light
copies --help shows are the registries' own names, in order, and each grammar parses as its parser does."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from attrib import choices
from attrib.cli import main
from attrib.cli_options import GridValues, Layers, OptionError, ParamSetting, PerClass, RegistryNames, Shots, ViewSpec
from attrib.probe.options import StudyError


# ------------------------------------------------------------------------ choices == the registries
def test_choices_are_the_registries_names_in_order() -> None:
    from attrib.data import DATASETS, DEFAULT_DEMO_ROOT
    from attrib.extract.views import NAMED_VIEWS, PAPER_VIEWS, VIEWS
    from attrib.predict import FORMATS
    from attrib.probe.heads import HEADS
    from attrib.probe.protocol import PROTOCOLS
    from attrib.probe.scorers import SCORERS

    assert choices.DATASETS == DATASETS and choices.DEFAULT_DEMO_ROOT == DEFAULT_DEMO_ROOT
    assert choices.HEADS == tuple(HEADS) and choices.SCORERS == tuple(SCORERS)
    assert choices.PROTOCOLS == PROTOCOLS and choices.FORMATS == FORMATS
    from attrib.probe.report import MAIN_METRICS

    assert choices.REPORT_METRICS == tuple(MAIN_METRICS)
    assert tuple(choices.VIEW_EXAMPLES) == (*VIEWS, *PAPER_VIEWS, *NAMED_VIEWS)


def test_choices_are_the_code_defaults() -> None:
    from attrib.data import pose, sampling
    from attrib.extract import backbone, runner
    from attrib.probe import heads, study
    from attrib.store import DEFAULT_SHARD_SIZE

    assert (choices.DEFAULT_MODEL, choices.DEFAULT_PRETRAINED, choices.TINY, choices.RANDOM_INIT) == (
        backbone.DEFAULT_MODEL, backbone.DEFAULT_PRETRAINED, backbone.TINY, backbone.RANDOM_INIT)
    assert choices.PRECISIONS == runner.PRECISIONS and choices.DEFAULT_BATCH_SIZE == runner.RunConfig().batch_size
    assert choices.DEFAULT_SHARD_SIZE == DEFAULT_SHARD_SIZE
    assert (choices.DEFAULT_TRAIN_PER_CLASS, choices.DEFAULT_VAL_PER_CLASS, choices.DEFAULT_TEST_PER_CLASS,
            choices.POSE_PER_CLASS) == (sampling.DEFAULT_TRAIN_PER_CLASS, sampling.DEFAULT_VAL_PER_CLASS,
                                        sampling.DEFAULT_TEST_PER_CLASS, pose.POSE_PER_CLASS)
    assert np.array_equal(10.0 ** np.linspace(*choices.DEFAULT_LOG10_C), heads.DEFAULT_CS)
    assert choices.DEFAULT_KS == tuple(heads.DEFAULT_KS)
    assert choices.DEFAULT_TPR == study.DEFAULT_TPR


def test_known_test_choices_are_what_pose_splits_accept(tmp_path: Path) -> None:
    from attrib.data.catalog import ImageList
    from attrib.data.pose import PoseSplits
    from attrib.data.splits import SplitError

    images = ImageList.from_rows([("a.png", "real", "train")], root=str(tmp_path))
    with pytest.raises(SplitError) as bad:
        PoseSplits(images, np.ones(1, bool), tmp_path, known_test="x")
    assert f"known_test must be {' or '.join(map(repr, choices.KNOWN_TEST))}, got 'x'" in str(bad.value)


def test_every_view_example_parses() -> None:
    from attrib.extract.views import View

    for name, value in choices.VIEW_EXAMPLES.items():
        spec = name if value is None else f"{name}:{value}"
        assert View.parse(spec).spec == spec


@pytest.mark.parametrize("command, listed", [
    ("probe", choices.HEADS + choices.SCORERS + choices.PROTOCOLS + choices.KNOWN_TEST),
    ("features", choices.DATASETS + choices.PRECISIONS + tuple(choices.VIEW_EXAMPLES)),
    ("predict", choices.FORMATS + choices.PRECISIONS),
    ("report", choices.REPORT_METRICS)])
def test_help_lists_every_choice(command: str, listed: tuple[str, ...]) -> None:
    text = " ".join(CliRunner().invoke(main, [command, "--help"], terminal_width=1000).output.split())
    missing = [name for name in listed if name not in text]
    assert not missing, f"`attrib {command} --help` does not list {missing}"


# ---------------------------------------------------------------------------------------- grammars
def test_shots() -> None:
    assert Shots().convert("1, 5,all", None, None) == [1, 5, None]
    for bad in ("0", "1,,2", "-1", "five", "1.5"):
        with pytest.raises(OptionError, match=rf"^--shots '{bad}': use positive integers and 'all', comma-separated$"):
            Shots().convert(bad, None, None)


def test_per_class() -> None:
    assert [PerClass().convert(v, None, None) for v in ("7", "all", None)] == [7, "all", None]
    for bad in ("0", "x", "-3"):
        with pytest.raises(click.BadParameter, match="use a positive integer or 'all'"):
            PerClass().convert(bad, None, None)


def test_layers_are_resolved_by_parse_layers_against_the_depth() -> None:
    spec = Layers().convert("all;concat:-2,-1", None, None)
    assert spec.resolve(3) == [(0,), (1,), (2,), (1, 2)]
    assert spec.resolve(5)[-1] == (3, 4)
    with pytest.raises(StudyError, match="block 7 out of range 0..3"):
        Layers().convert("7", None, None).resolve(4)


def test_grid_values_one_name_each() -> None:
    assert GridValues().convert("C=0.01,1,1e2", None, None) == ("C", [0.01, 1, 100.0])
    with pytest.raises(StudyError, match="--grid 'C': use NAME=V1,V2"):
        GridValues().convert("C", None, None)


def test_a_repeated_grid_name_overrides_the_earlier_one() -> None:
    """As `parse_grid` does: the CLI folds the (name, values) pairs into a dict, the last one winning."""
    from attrib.probe.options import parse_grid

    specs = ["C=1,2", "k=3", "C=5"]
    assert dict(GridValues().convert(s, None, None) for s in specs) == parse_grid(specs) == {"C": [5], "k": [3]}


def test_param_setting_is_parsed_by_parse_param() -> None:
    """As `parse_param` does; NAME and KEY are checked later, by the study, against the live registries."""
    from attrib.probe.params import parse_param

    for spec in ("mahalanobis.shrinkage=0", "knn.k=20", "gauss.shrinkage=0.1", "gauss.shrinkage=auto", "x.on=true"):
        assert ParamSetting().convert(spec, None, None) == parse_param(spec)
    assert ParamSetting().convert("knn.k=20", None, None) == ("knn", "k", 20)
    assert ParamSetting().convert(("knn", "k", 20), None, None) == ("knn", "k", 20)
    with pytest.raises(StudyError, match="--param 'knn.k': use NAME.KEY=VALUE"):
        ParamSetting().convert("knn.k", None, None)
    text = " ".join(CliRunner().invoke(main, ["probe", "--help"], terminal_width=1000).output.split())
    assert "--param NAME.KEY=VALUE" in text and "--save-scores" in text


def test_registry_names_expand_all_from_the_live_registry(monkeypatch) -> None:
    from attrib.probe.heads import HEADS

    heads = RegistryNames("attrib.probe.heads.HEADS", choices.HEADS)
    assert heads.convert("knn, logreg,knn", None, None) == ["knn", "logreg"]
    monkeypatch.setitem(HEADS, "extra", HEADS["logreg"])
    assert heads.convert("all", None, None) == list(choices.HEADS) + ["extra"]


def test_view_spec_is_parsed_by_view_parse() -> None:
    from attrib.extract.views import ViewError

    assert ViewSpec().convert("jpeg:75.0+blur:1", None, None).spec == "jpeg:75+blur:1"
    with pytest.raises(ViewError, match="'sepia:1' is not a view"):
        ViewSpec().convert("sepia:1", None, None)
