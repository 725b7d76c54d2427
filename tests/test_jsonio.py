"""The one JSON encoder: numpy to plain JSON, its NaN/inf rule (null by default, a tagged float where a
saved head's state must come back exactly), and strict output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from attrib import jsonio
from attrib.probe.persist import load_head, save_head

from synthetic_features import CentroidDistance, CentroidHead, register


def test_to_jsonable_makes_plain_json_and_nulls_non_finite_numbers() -> None:
    data = {1: np.float32(0.5), "a": (np.int64(3), np.bool_(True)), "arr": np.array([[1.0, np.nan], [np.inf, 2.0]]),
            "nan": float("nan"), "ninf": -np.inf, "path": Path("x/y"), "none": None, "s": np.str_("t")}
    out = jsonio.to_jsonable(data)
    assert out == {"1": 0.5, "a": [3, True], "arr": [[1.0, None], [None, 2.0]], "nan": None, "ninf": None,
                   "path": "x/y", "none": None, "s": "t"}
    assert type(out["1"]) is float and type(out["a"][0]) is int and type(out["a"][1]) is bool
    assert json.loads(jsonio.dumps(out)) == out


def test_dumps_refuses_nan_instead_of_writing_a_non_json_token() -> None:
    with pytest.raises(ValueError):
        jsonio.dumps({"auroc": float("nan")})
    assert jsonio.canonical({"b": 1, "a": [1.5, None]}) == b'{"a":[1.5,null],"b":1}'


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), np.float32("nan")])
def test_exact_scalars_round_trip_non_finite_floats(value) -> None:
    tagged = jsonio.scalar(value, exact=True)
    assert json.loads(jsonio.dumps(tagged)) == tagged and set(tagged) == {jsonio.FLOAT_TAG}
    back = jsonio.tagged_float(tagged)
    assert (math.isnan(back) and math.isnan(value)) or back == value
    assert jsonio.scalar(value) is None
    with pytest.raises(TypeError):
        jsonio.scalar([value])


def test_a_saved_heads_non_finite_state_comes_back_exactly(tmp_path: Path, monkeypatch) -> None:
    register(monkeypatch)
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 10)
    X = (rng.normal(size=(30, 4)) + 3 * rng.normal(size=(3, 4))[y]).astype(np.float32)
    head = CentroidHead().fit(X, y)
    head.meta_ = {"spread": float("nan"), "bounds": [float("-inf"), np.float64(np.inf)], "n": 30}
    scorer = CentroidDistance(head=head).fit(X, y)
    save_head(tmp_path, head, scorer, head_name="centroid", score_name="centroid_dist",
              classes=["real", "a", "b"], layer=(1,), threshold=0.0, feature_set="fs", manifest={},
              check_X=X[:4], info={"note": "x"})
    text = (tmp_path / "head.json").read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON
    written = json.loads(text)["head"]["state"]["__dict__"]["meta_"]["__dict__"]
    assert written["spread"] == {"__float__": "nan"}  # the form head files have always used
    assert written["bounds"] == [{"__float__": "-inf"}, {"__float__": "inf"}]
    meta = load_head(tmp_path).head.meta_
    assert math.isnan(meta["spread"]) and meta["bounds"] == [float("-inf"), float("inf")] and meta["n"] == 30
