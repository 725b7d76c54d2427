"""Benchmarks behind `make bench`: speed goals are measured here, never asserted in tests.

Each submodule listed in BENCHES exposes ``main(argv)``; `python -m attrib.bench [name ...]` runs them in
order and prints their measurements. A benchmark that is not written yet is reported as missing.
"""

from __future__ import annotations

import importlib
import sys

BENCHES = ("listing", "extract", "probe", "study")


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(BENCHES)
    ran = 0
    for name in names:
        try:
            mod = importlib.import_module(f"attrib.bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"attrib.bench.{name}":
                raise
            print(f"[{name}] no benchmarks yet")
            continue
        print(f"== bench: {name} ==", flush=True)
        mod.main([])
        ran += 1
    if not ran:
        print("no benchmarks yet")
    return 0
