"""Benchmark: a whole demo study (3 splits x 4 blocks x logreg x msp, default C grid) must feel
interactive. Measures the wall time of `attrib probe`'s study and report on the demo's features, with
--jobs 1 and 2, and splits it into fitting the C path (the heads' solver) and everything else (reading,
selection, scoring, metrics, writing: this module's share).

Run: ``python -m attrib.bench study`` (builds the demo and its attrib-tiny features under .bench/ once).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(".bench")


def demo_features() -> Path:
    """The demo's attrib-tiny (random-init) feature set, extracted once into .bench/cache."""
    out = subprocess.run(
        [sys.executable, "-m", "attrib", "features", "--dataset", "demo", "--root", str(BENCH_DIR / "demo"),
         "--model", "attrib-tiny", "--pretrained", "random-init", "--cache", str(BENCH_DIR / "cache"),
         "--workers", "0", "--quiet"], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(prog="python -m attrib.bench study", description=__doc__.split("\n\n")[0]).parse_args(argv)
    from attrib.data.sampling import SampledSplits
    from attrib.data.splits import builtin_splits
    from attrib.probe.options import parse_layers
    from attrib.probe.report import write_report
    from attrib.probe.results import read_results
    from attrib.probe.study import StudyConfig, run_study
    from attrib.store import FeatureSet

    fs = FeatureSet.open(demo_features())
    ok, _ = fs.status()
    for jobs in (1, 2):
        cfg = StudyConfig(splits=SampledSplits(fs.images, ok, builtin_splits("demo")),
                          layers=parse_layers("all", fs.n_blocks), jobs=jobs)
        out = Path(tempfile.mkdtemp(prefix="attrib-bench-study-"))
        try:
            t0 = time.perf_counter()
            run = run_study(fs, cfg, out, progress=False, log=lambda m: None)
            t1 = time.perf_counter()
            write_report(out)
            t2 = time.perf_counter()
            lines = read_results(out)
            fit = sum(d["seconds"]["fit_path"] for d in lines)
            rest = sum(d["seconds"][k] for d in lines for k in ("read", "select", "score", "metrics"))
        finally:
            shutil.rmtree(out, ignore_errors=True)
        print(json.dumps({
            "bench": "demo study 3 splits x 4 blocks x logreg x msp (45 C)", "jobs": jobs,
            "lines": run.written, "study_s": round(t1 - t0, 2), "report_s": round(t2 - t1, 2),
            "fit_path_s_summed_over_jobs": round(fit, 2), "other_work_s_summed_over_jobs": round(rest, 3),
            "images": {k: v for k, v in lines[0]["n"].items() if k != "train_per_class"},
        }), flush=True)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
