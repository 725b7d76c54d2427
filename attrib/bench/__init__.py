"""Benchmarks behind `make bench`: speed goals are measured here, never asserted in tests.

Each submodule listed in BENCHES exposes ``main(argv)``; `python -m attrib.bench` runs them all in order
and prints their measurements, `python -m attrib.bench NAME [OPTIONS...]` runs one with options.
"""

from __future__ import annotations

import importlib
import sys

BENCHES = ("listing", "extract", "probe", "study", "grow", "protocol", "fulldata")


def main(argv: list[str] | None = None) -> int:
    """``python -m attrib.bench`` runs every benchmark with its defaults; ``python -m attrib.bench NAME
    [OPTIONS...]`` runs one, passing the options on (``python -m attrib.bench extract --help``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in BENCHES:
        print(f"unknown benchmark {argv[0]!r}; choose one of {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    runs = [(argv[0], argv[1:])] if argv else [(name, []) for name in BENCHES]
    for name, args in runs:
        mod = importlib.import_module(f"attrib.bench.{name}")
        print(f"== bench: {name} ==", flush=True)
        mod.main(args)
    return 0
