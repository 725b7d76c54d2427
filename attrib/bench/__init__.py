"""Benchmarks behind `make bench`: speed goals are measured here, never asserted in tests.

Each submodule listed in BENCHES exposes ``main(argv)``; `python -m attrib.bench` runs those in DEFAULT in order
and prints their measurements, each after the machine it ran on; `python -m attrib.bench NAME [OPTIONS...]` runs
one with options.
"""

from __future__ import annotations

import importlib
import sys

from attrib.bench.machine import machine

BENCHES = ("listing", "extract", "probe", "study", "grow", "protocol", "fulldata")
# what `make bench` (no name) runs: fulldata builds a 1.3M-row synthetic set (minutes, ~3 GB of disk) and
# then probes it for about ten minutes, so it runs only when named (`make bench-fulldata`)
DEFAULT = tuple(b for b in BENCHES if b != "fulldata")


def main(argv: list[str] | None = None) -> int:
    """``python -m attrib.bench`` runs the benchmarks in :data:`DEFAULT` with their defaults;
    ``python -m attrib.bench NAME [OPTIONS...]`` runs one, passing the options on
    (``python -m attrib.bench extract --help``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in BENCHES:
        print(f"unknown benchmark {argv[0]!r}; choose one of {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    runs = [(argv[0], argv[1:])] if argv else [(name, []) for name in DEFAULT]
    for name, args in runs:
        mod = importlib.import_module(f"attrib.bench.{name}")
        print(f"== bench: {name} ==\nmachine: {machine()}", flush=True)
        mod.main(args)
    return 0
