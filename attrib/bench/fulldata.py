"""Benchmark: full-data probes, every training image instead of 4000 per class.

GenImage has about 1.3M training images in a split's five known classes. This builds once (under
``--cache``, reused) a SYNTHETIC one-block feature set in GenImage's layout whose split 1 has that many
training rows (768 dims, CLIP-like, see :mod:`attrib.bench.synthetic`), then runs

    attrib probe --features SET --splits 1 --layers 0 --train-per-class N|all --out TMP --quiet

for each size in ``--rows`` (N = rows / 5 per class; the largest size is ``all``) in a fresh process,
and prints its wall and CPU time and its peak memory (the largest resident set of the probe's
processes, from getrusage). The cost should grow about linearly with the rows: the C path streams the
rows a fixed number of times, and the solver holds one centred copy of them next to the study's own.

    python -m attrib.bench fulldata                          # 100k, 300k, 1.3M rows (tens of minutes)
    python -m attrib.bench fulldata --rows 100000,300000     # the smaller two
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from attrib.bench.machine import load, machine
from attrib.bench.protocol import BENCH_DIR, add_probe_options, probe_options, run_probe

ROWS = (100_000, 300_000, 1_300_000)
VAL_FRACTION = 0.2   # GenImage layout: validation is the first 20% of a class's train/ images
SPLIT = "1"


def full_data_set(cache: Path, max_rows: int):
    """The one-block set whose split 1 has ``max_rows`` training rows (plus its validation and test rows)."""
    from attrib.bench.synthetic import genimage_like
    from attrib.data.catalog import REAL
    from attrib.data.genimage import GENERATORS, SPLITS

    known, unknown = SPLITS[int(SPLIT)]
    per_class = -(-max_rows // (len(known) + 1))
    train_dir = {s: int(round(per_class / (1 - VAL_FRACTION))) for s in (REAL,) + known}
    train_dir.update({s: 5000 for s in unknown})             # 1000 validation images each
    return genimage_like(cache, train_dir, {s: 4000 for s in (REAL,) + GENERATORS}, n_blocks=1, peak_block=0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m attrib.bench fulldata", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default=",".join(map(str, ROWS)),
                    help="training rows per run, comma-separated")
    ap.add_argument("--set-rows", type=int, default=None,
                    help="training rows of the synthetic set (default: the largest of --rows); a run at this size "
                         "uses --train-per-class all, smaller ones a cap. Lets a smaller run reuse the 1.3M set")
    ap.add_argument("--cache", type=Path, default=BENCH_DIR / "cache", help="where the synthetic set is kept")
    ap.add_argument("--save", type=Path, default=None, help="write the measurements (JSON)")
    add_probe_options(ap)
    a = ap.parse_args(argv)
    sizes = sorted(int(r) for r in a.rows.split(","))
    set_rows = a.set_rows or sizes[-1]
    if sizes[-1] > set_rows:
        raise SystemExit(f"--rows {sizes[-1]} is more than the set's --set-rows {set_rows}")

    t0 = time.perf_counter()
    fs = full_data_set(a.cache, set_rows)
    print(f"features: {fs.path} (SYNTHETIC, {fs.n_images:,} images x {fs.n_blocks} block x {fs.width}; ready in "
          f"{time.perf_counter() - t0:.1f} s)", flush=True)
    here = machine()
    extra, products = probe_options(a)
    results = []
    for rows in sizes:
        cap = "all" if rows == set_rows else str(rows // 5)
        r = run_probe(fs.path, SPLIT, "0", 1, ["--train-per-class", cap, *extra])
        (line,) = r["lines"]
        n_train = line["n"]["train"]
        res = {"rows": n_train, "train_per_class": cap, "machine": here, "device": a.device, "params": a.param,
               "products": products,
               "wall_s": round(r["wall_s"], 1), "cpu_s": round(r["cpu_s"], 1),
               "fit_path_s": line["seconds"]["fit_path"], "peak_rss_gb": round(r["peak_rss_gb"], 2),
               "accuracy": line["accuracy"], "C": line["hparams"].get("C"), "load_before": r["load_before"],
               "load_after": r["load_after"]}
        results.append(res)
        print(f"$ {r['command']}\n  {n_train:,} training rows: wall {res['wall_s']} s, CPU {res['cpu_s']} s (C path "
              f"{res['fit_path_s']:.1f} s), peak memory {res['peak_rss_gb']} GB; test accuracy "
              f"{100 * res['accuracy']:.2f} % at C = {res['C']:.3g}; {r['load_before']} before, {r['load_after']} "
              "after", flush=True)
    if len(results) > 1:
        a0, a1 = results[0], results[-1]
        print(f"growth from {a0['rows']:,} to {a1['rows']:,} rows ({a1['rows'] / a0['rows']:.1f}x): C path "
              f"{a1['fit_path_s'] / a0['fit_path_s']:.1f}x, CPU {a1['cpu_s'] / a0['cpu_s']:.1f}x, peak memory "
              f"{a1['peak_rss_gb'] / a0['peak_rss_gb']:.1f}x; now {load()}")
    if a.save:
        a.save.write_text(json.dumps(results, indent=1))
    print(json.dumps({"bench": "fulldata", "machine": here, "results": results}), flush=True)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
