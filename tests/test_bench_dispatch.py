"""`python -m attrib.bench NAME OPTIONS...` hands the options to that benchmark; an unknown name is refused."""

from __future__ import annotations

import pytest

from attrib.bench import BENCHES, main
from attrib.bench.machine import cpu, machine


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
    out = capsys.readouterr().out  # each benchmark's figures follow the machine they were measured on
    assert out.count("\nmachine: ") == len(ran) and f"machine: {machine()}" in out
    ran.clear()
    assert main(["fulldata", "--rows", "1000"]) == 0 and ran == [("fulldata", ["--rows", "1000"])]


_X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9B45
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw
bugs\t\t: sysret_ss_attrs

processor\t: 1
model name\t: AMD EPYC 9B45
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw
"""


@pytest.mark.parametrize("text, expected", [
    (_X86, "AMD EPYC 9B45, AVX-512"),
    (_X86.replace(" avx512f avx512bw", ""), "AMD EPYC 9B45, AVX2"),   # the widest extension is named
    ("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2\n", "Some CPU"),  # none worth naming
    ("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm\nCPU implementer\t: 0x41\n"
     "\nHardware\t: Example SoC\n", "Example SoC, NEON"),  # ARM: other field names
])
def test_benchmarks_name_the_cpu_and_its_vector_units(tmp_path, text: str, expected: str) -> None:
    """A timing without the machine cannot tell a faster solver from a faster CPU (the same solver took
    203 s for the whole protocol on an AVX2 VM, 110-145 s on an AVX-512 one)."""
    info = tmp_path / "cpuinfo"
    info.write_text(text)
    assert cpu(info) == expected
    assert cpu(tmp_path / "missing")  # no /proc/cpuinfo (macOS, Windows): what platform knows, never an error
    assert machine().startswith(cpu()) and machine().endswith("CPUs usable")


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
    # choices compare across machines, times do not: a reference from another CPU is named
    assert ok["other_machine"] is None  # summaries saved before the field: nothing to say
    here = {**ref, "machine": "AMD EPYC, AVX-512; 2 CPUs usable"}
    there = {**ref, "machine": "AMD EPYC, AVX2; 2 CPUs usable"}
    assert compare(here, there)["other_machine"] == "AMD EPYC, AVX2; 2 CPUs usable"
    assert compare(here, {**here})["other_machine"] is None and compare(here, here)["pass"]


def test_the_protocol_bench_puts_the_C_path_on_a_device_only_when_asked() -> None:
    from attrib.bench.protocol import device_args
    from attrib.probe.params import parse_param

    assert device_args("cpu") == []
    assert device_args("cuda") == ["--param", "logreg.device=cuda"]
    assert parse_param(device_args("cuda:1")[1]) == ("logreg", "device", "cuda:1")


def test_the_protocol_bench_says_what_computes_the_C_path_products() -> None:
    """A faster library is not a faster solver: each run names the products it used."""
    from attrib.bench.protocol import products_used
    from attrib.probe.onednn import available

    assert products_used("cuda:0", []) == "torch on cuda:0"
    assert products_used("cpu", ["logreg.products=blas"]).startswith("torch's BLAS (--param logreg.products=blas")
    assert products_used("cpu", ["logreg.screen_tol=none"]).startswith("oneDNN" if available() else "torch's BLAS")
