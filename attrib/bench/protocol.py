"""Benchmark: the paper's whole probe protocol, timed as a user runs it.

Builds once (under ``--cache``, reused by later runs) a SYNTHETIC feature set shaped like GenImage
features of ViT-B/16: 9 sources with GenImage's names and folder layout, 12 blocks x 768 dims, CLIP-like
(see :mod:`attrib.bench.synthetic`; class separation peaks at block 7, where the closed-set accuracy is
95-99%). Then runs

    attrib probe --features SET --splits 1-5 --layers all --jobs 2 --out TMP --quiet

(logreg + msp, 45 C, 4000 training images per class, the clean protocol: all defaults) in a fresh
process and prints its wall time, the CPU time it used, the machine load around it, and the split of the
work into read / fit / select / score / metrics summed over the result lines (so over all workers).

``--save FILE`` keeps the chosen C and the metrics of every (split, layer); ``--compare FILE`` checks a
run against a saved one: the same chosen C or a neighbouring grid value, test accuracy within 0.1 pp —
how a faster solver is checked against the one it replaces.

    python -m attrib.bench protocol                       # the whole protocol (minutes)
    python -m attrib.bench protocol --splits 1 --layers 6-8 --save before.json
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from attrib.bench.machine import load, machine

BENCH_DIR = Path(".bench")
PHASES = ("read", "fit_path", "select", "score", "metrics")
ACCURACY_PP = 0.1  # goal: test accuracy within 0.1 percentage point of the reference run


# Runs `attrib probe` as its child and reports the child's resource usage: RUSAGE_CHILDREN of a fresh
# process covers exactly that run (its CPU time summed over the probe and its workers, and the largest
# peak RSS among them).
_MEASURE = """import json, resource, subprocess, sys, time
t0 = time.perf_counter()
rc = subprocess.run(sys.argv[1:]).returncode
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": rc, "wall_s": time.perf_counter() - t0, "cpu_s": r.ru_utime + r.ru_stime,
                  "peak_rss_gb": r.ru_maxrss / 2 ** 20}))
"""


def run_probe(fs_path: Path, splits: str, layers: str, jobs: int, extra: list[str] | None = None) -> dict:
    """Run `attrib probe` in a fresh process: wall and CPU seconds, peak memory, the load, its result lines."""
    out = Path(tempfile.mkdtemp(prefix="attrib-bench-probe-"))
    cmd = [sys.executable, "-m", "attrib", "probe", "--features", str(fs_path), "--splits", splits,
           "--layers", layers, "--jobs", str(jobs), "--out", str(out / "results"), "--quiet", *(extra or [])]
    load_before = load()
    try:
        proc = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True)
        usage = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {"rc": proc.returncode}
        if usage["rc"]:
            raise SystemExit(f"attrib probe failed ({usage['rc']}):\n{proc.stderr[-4000:]}")
        from attrib.probe.study import read_results

        lines = read_results(out / "results")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    m = re.search(r"new lines in ([\d.]+) s", proc.stderr)
    return {"command": " ".join(["attrib", *cmd[3:]]), **{k: v for k, v in usage.items() if k != "rc"},
            "study_s": float(m.group(1)) if m else None, "load_before": load_before, "load_after": load(),
            "lines": lines}


def device_args(device: str) -> list[str]:
    """The probe options that put the C path on ``device`` (none for the CPU, the default, so that a CPU
    run's command and result lines stay those of a plain ``attrib probe``)."""
    return [] if device == "cpu" else ["--param", f"logreg.device={device}"]


def add_probe_options(ap: argparse.ArgumentParser) -> None:
    """``--device`` and ``--param``, which the probe benchmarks pass on to ``attrib probe``."""
    ap.add_argument("--device", default="cpu",
                    help="where the C path runs: cpu, cuda, cuda:N or auto (adds --param logreg.device=...)")
    ap.add_argument("--param", action="append", default=[], metavar="NAME.KEY=VALUE",
                    help="passed on to attrib probe, repeatable: e.g. logreg.products=blas (torch's BLAS "
                         "for the C path's products instead of oneDNN) or logreg.screen_tol=none")


def probe_options(a: argparse.Namespace) -> tuple[list[str], str]:
    """(the options :func:`add_probe_options` gave, for ``attrib probe``; what computes the C path's
    products), the latter printed."""
    products = products_used(a.device, a.param)
    print(f"C-path products: {products}", flush=True)
    return device_args(a.device) + [x for p in a.param for x in ("--param", p)], products


def products_used(device: str, params: list[str]) -> str:
    """What computes the C path's products in this run, as the benchmark reports it: a faster solver and
    a faster library are different findings."""
    if device != "cpu":
        return f"torch on {device}"
    import torch

    from attrib.probe.onednn import available
    from attrib.probe.params import parse_param

    if any(parse_param(p) == ("logreg", "products", "blas") for p in params):
        return f"torch's BLAS (--param logreg.products=blas; torch {torch.__version__})"
    if available():
        return f"oneDNN (torch {torch.__version__})"
    return (f"torch's BLAS (oneDNN only with AVX-512 and a working operator; torch {torch.__version__}, CPU "
            f"capability {torch.backends.cpu.get_cpu_capability()})")


def summarise(lines: list[dict]) -> dict:
    """Per (split, layer): chosen C and metrics; the phases summed; the best block by mean accuracy."""
    per = {f"{d['split']}/{d['layer']}": {"C": (d["hparams"] or {}).get("C"), "index": d["selection"]["index"],
                                          "accuracy": d["accuracy"], "auroc": d["auroc"], "oscr": d["oscr"]}
           for d in lines}
    phases = {k: round(sum(d["seconds"][k] for d in lines), 2) for k in PHASES}
    by_layer = defaultdict(list)
    for d in lines:
        by_layer[d["layer"]].append(d["accuracy"])
    best = max(by_layer, key=lambda k: np.mean(by_layer[k]))
    return {"lines": per, "phases_summed_s": phases, "best_layer": best,
            "best_layer_accuracy": float(np.mean(by_layer[best])),
            "accuracy_by_layer": {k: round(float(np.mean(v)), 5)
                                  for k, v in sorted(by_layer.items(), key=lambda kv: int(kv[0]))}}


def compare(now: dict, ref: dict) -> dict:
    """Chosen C (grid index) and test accuracy of every (split, layer) line against a reference run."""
    common = sorted(set(now["lines"]) & set(ref["lines"]))
    if not common:
        raise SystemExit("--compare: no (split, layer) in common with the reference run")
    steps = [abs(now["lines"][k]["index"] - ref["lines"][k]["index"]) for k in common]
    dacc = [100 * (now["lines"][k]["accuracy"] - ref["lines"][k]["accuracy"]) for k in common]
    worst = max(range(len(common)), key=lambda i: abs(dacc[i]))
    return {"lines": len(common), "same_C": sum(s == 0 for s in steps), "neighbouring_C": sum(s == 1 for s in steps),
            "other_C": [common[i] for i, s in enumerate(steps) if s > 1],
            "max_abs_accuracy_pp": round(abs(dacc[worst]), 4), "worst_line": common[worst],
            "mean_accuracy_pp": round(float(np.mean(dacc)), 4),
            "pass": all(s <= 1 for s in steps) and abs(dacc[worst]) <= ACCURACY_PP,
            "other_machine": other_machine(now, ref)}


def other_machine(now: dict, ref: dict) -> str | None:
    """The reference's machine when it is not this run's (None when they match or a summary predates
    the field): its choices still compare, its times do not."""
    theirs = ref.get("machine")
    return theirs if theirs and theirs != now.get("machine") else None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m attrib.bench protocol", description=__doc__.split("\n\n")[0])
    ap.add_argument("--splits", default="1-5")
    ap.add_argument("--layers", default="all")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--train-dir", type=int, default=5000,
                    help="images per source in train/ (20%% of them validate: 5000 = 4000 train + 1000 val)")
    ap.add_argument("--val-dir", type=int, default=4000, help="images per source in val/ (the test images)")
    ap.add_argument("--cache", type=Path, default=BENCH_DIR / "cache", help="where the synthetic set is kept")
    ap.add_argument("--save", type=Path, default=None, help="write this run's summary (JSON)")
    ap.add_argument("--compare", type=Path, default=None, help="check against a summary saved with --save")
    add_probe_options(ap)
    a = ap.parse_args(argv)

    from attrib.bench.synthetic import genimage_like
    from attrib.data.catalog import REAL
    from attrib.data.genimage import GENERATORS

    t0 = time.perf_counter()
    fs = genimage_like(a.cache, {s: a.train_dir for s in (REAL,) + GENERATORS},
                       {s: a.val_dir for s in (REAL,) + GENERATORS})
    print(f"features: {fs.path} (SYNTHETIC, {fs.n_images:,} images x {fs.n_blocks} blocks x {fs.width}; "
          f"ready in {time.perf_counter() - t0:.1f} s)", flush=True)
    extra, products = probe_options(a)
    r = run_probe(fs.path, a.splits, a.layers, a.jobs, extra)
    s = summarise(r["lines"])
    phases = s["phases_summed_s"]
    print(f"$ {r['command']}")
    print(f"  wall {r['wall_s']:.1f} s (study {r['study_s']} s), CPU {r['cpu_s']:.1f} s, peak memory "
          f"{r['peak_rss_gb']:.2f} GB (largest process); {r['load_before']} before, {r['load_after']} after")
    print(f"  {len(r['lines'])} lines; work summed over lines: "
          + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items())
          + f"; fit_path per line {phases['fit_path'] / max(1, len(r['lines'])):.2f} s")
    print(f"  best block {s['best_layer']}: mean test accuracy {100 * s['best_layer_accuracy']:.2f} % "
          f"(by block: {', '.join(f'{k}: {100 * v:.1f}' for k, v in s['accuracy_by_layer'].items())})")
    summary = {"bench": "protocol", "machine": machine(), "splits": a.splits, "layers": a.layers, "jobs": a.jobs,
               "device": a.device, "params": a.param, "products": products,
               **{k: r[k] for k in ("command", "wall_s", "study_s", "cpu_s", "peak_rss_gb", "load_before",
                                    "load_after")}, **s}
    if a.compare:
        c = compare(summary, json.loads(a.compare.read_text()))
        summary["compare"] = c
        print(f"  against {a.compare}: {c['same_C']} same C, {c['neighbouring_C']} neighbouring, "
              f"{len(c['other_C'])} other {c['other_C'][:5]}; test accuracy differs by at most "
              f"{c['max_abs_accuracy_pp']:.2f} pp ({c['worst_line']}), mean {c['mean_accuracy_pp']:+.3f} pp "
              f"(goal: same or neighbouring C, within {ACCURACY_PP} pp): {'PASS' if c['pass'] else 'FAIL'}")
        if c["other_machine"]:
            print(f"  the reference ran on another machine ({c['other_machine']}): compare its times with care")
    if a.save:
        a.save.write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "lines"}), flush=True)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
