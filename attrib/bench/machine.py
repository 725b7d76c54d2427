"""What a benchmark ran on: the CPU, its vector units and the load around the run.

Why every benchmark prints this (and the protocol and full-data summaries save it): the same solver took
203 s for the whole protocol on one 2-core VM (AVX2) and 110-145 s on another (AVX-512) a few hours
later, and a saved summary without the machine cannot tell a faster solver from a faster CPU.
``--compare`` checks results, never times, so it does not need the machine; a reader comparing times does.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

# the widest vector extension first: it is what the BLAS products (most of the probe's time) run on
_VECTOR_FLAGS = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("asimd", "NEON"))


def load() -> str:
    """The 1-minute load average and the number of CPUs: timings on a shared machine need both."""
    return f"load {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"


def cpu(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str:
    """The CPU's model name and widest vector extension, e.g. ``"AMD EPYC, AVX-512"``, from Linux's
    ``/proc/cpuinfo``; elsewhere what :mod:`platform` knows (the extension then unknown)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine() or "unknown CPU"
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:   # the first processor's fields describe them all here
            fields[key.strip()] = value.strip()
    name = fields.get("model name") or fields.get("Hardware") or platform.machine() or "unknown CPU"
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    vector = next((label for flag, label in _VECTOR_FLAGS if flag in flags), None)
    return f"{name}, {vector}" if vector else name


def machine() -> str:
    """One line for a benchmark's output and summary: the CPU and how many CPUs this process may use."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu()}; {usable} CPUs usable"
