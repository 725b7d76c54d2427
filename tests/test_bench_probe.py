"""The C-path benchmark against scikit-learn runs end to end on a small problem, and resumes from its
saved scikit-learn fits instead of refitting them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from attrib.bench.probe import run
from attrib.probe.heads import DEFAULT_CS


def test_probe_benchmark_compares_with_sklearn_and_reuses_its_saved_fits(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    saved = tmp_path / "sk.json"
    small = dict(classes=3, shots=60, dim=24, val=30, test=40, seed=0, threads=1, repeats=1)
    result = run(sklearn_every=22, sklearn_results=saved, **small)
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and "EXTRAPOLATED: mean of 3 evenly spaced fits x 45" in out
    assert result["full"] is False and result["speedup"] > 0 and result["C_attrib"] in DEFAULT_CS
    assert np.isfinite(result["test_pp_difference"]) and np.isfinite(result["max_dobj"])
    fits = json.loads(saved.read_text())
    (key, rows), = fits.items()
    assert "classes=3" in key and sorted(int(j) for j in rows) == [0, 22, 44]
    rows["22"]["seconds"] = 1e6  # a rerun reads this instead of fitting again
    saved.write_text(json.dumps(fits))
    again = run(sklearn_every=22, sklearn_results=saved, **small)
    assert again["seconds_sklearn_path"] > 1e6
