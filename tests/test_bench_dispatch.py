"""`python -m attrib.bench NAME OPTIONS...` hands the options to that benchmark; an unknown name is refused."""

from __future__ import annotations

import pytest

from attrib.bench import BENCHES, main


def test_unknown_benchmark_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nope"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("name", BENCHES)
def test_options_reach_the_benchmark(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    assert "attrib.bench" in capsys.readouterr().out


def test_make_bench_runs_the_protocol_but_not_the_full_data_probes(monkeypatch, capsys) -> None:
    """`make bench` (no name) runs every benchmark but fulldata (tens of minutes, gigabytes of disk),
    which runs when named; each gets no options."""
    import types

    import attrib.bench as bench

    ran = []

    def fake_module(mod: str) -> types.SimpleNamespace:
        name = mod.rsplit(".", 1)[1]
        return types.SimpleNamespace(main=lambda argv: ran.append((name, argv)))

    monkeypatch.setattr(bench.importlib, "import_module", fake_module)
    assert main([]) == 0
    assert [n for n, _ in ran] == [b for b in BENCHES if b != "fulldata"] and "protocol" in dict(ran)
    assert all(argv == [] for _, argv in ran)
    ran.clear()
    assert main(["fulldata", "--rows", "1000"]) == 0 and ran == [("fulldata", ["--rows", "1000"])]


# ------------------------------------------------------------------ the protocol benchmark's parts
def test_synthetic_genimage_set_has_genimage_layout_and_splits(tmp_path) -> None:
    """The benchmark's feature set goes through the real store, in GenImage's layout, and the paper's
    five splits draw their rows from it; a second call reuses it."""
    import numpy as np

    from attrib.bench.synthetic import genimage_like, separation_profile
    from attrib.data.catalog import REAL
    from attrib.data.genimage import GENERATORS
    from attrib.data.sampling import SampledSplits
    from attrib.data.splits import builtin_splits

    sources = (REAL,) + GENERATORS
    fs = genimage_like(tmp_path, {s: 25 for s in sources}, {s: 10 for s in sources}, n_blocks=3, dim=12,
                       shard_size=64, log=lambda m: None)
    assert fs.n_images == 9 * 35 and fs.n_blocks == 3 and fs.width == 12 and "SYNTHETIC" in fs.label
    paths = dict(zip(fs.images.paths, fs.images.sources))
    assert paths["ADM/train/ai/0000003_adm.png"] == "ADM"
    assert {p.split("/")[2] for p, s in paths.items() if s == REAL} == {"nature"}
    assert {p.split("/")[0] for p, s in paths.items() if s == REAL} == set(GENERATORS)
    ok, _ = fs.status()
    rows = SampledSplits(fs.images, ok, builtin_splits("genimage")).rows("3", 0)
    assert len(rows.train) == 5 * 20 and len(rows.val) == 5 * 5 and len(rows.test) == 5 * 10
    X = fs.block(1, rows.train)
    assert X.shape == (100, 12) and np.isfinite(X).all() and np.abs(X).max() > 10  # huge-offset dims
    again = genimage_like(tmp_path, {s: 25 for s in sources}, {s: 10 for s in sources}, n_blocks=3, dim=12,
                          shard_size=64, log=lambda m: pytest.fail("rebuilt"))
    assert again.path == fs.path
    sep = separation_profile(12)
    assert int(np.argmax(sep)) == 7 and sep[0] < sep[7] and sep[11] < sep[7]


def test_protocol_comparison_checks_chosen_C_and_accuracy() -> None:
    from attrib.bench.protocol import compare

    def run(*lines):
        return {"lines": {k: {"index": i, "accuracy": a} for k, i, a in lines}}

    ref = run(("1/7", 19, 0.9760), ("1/8", 18, 0.9650))
    ok = compare(run(("1/7", 20, 0.9765), ("1/8", 18, 0.9650)), ref)
    assert ok["pass"] and ok["same_C"] == 1 and ok["neighbouring_C"] == 1
    far = compare(run(("1/7", 21, 0.9760), ("1/8", 18, 0.9650)), ref)
    assert not far["pass"] and far["other_C"] == ["1/7"]
    worse = compare(run(("1/7", 19, 0.9740), ("1/8", 18, 0.9650)), ref)
    assert not worse["pass"] and worse["worst_line"] == "1/7" and abs(worse["max_abs_accuracy_pp"] - 0.2) < 1e-9


def test_the_protocol_bench_puts_the_C_path_on_a_device_only_when_asked() -> None:
    from attrib.bench.protocol import device_args
    from attrib.probe.params import parse_param

    assert device_args("cpu") == []
    assert device_args("cuda") == ["--param", "logreg.device=cuda"]
    assert parse_param(device_args("cuda:1")[1]) == ("logreg", "device", "cuda:1")
