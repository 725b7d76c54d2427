"""The small grammars of a study's options: layers, path grids, shots and registry names.

Why a module of its own: the same strings appear on the command line (``--layers 6-10``), in every
result line (``"layer": "concat:9,10,11"``, ``"shots": "all"``) and in a saved head; one parser and one
printer per grammar keep them from drifting apart. Only the standard library is needed here, so the
command line can check its options without loading numpy, scikit-learn or torch.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

from attrib.errors import AttribError

LAYERS_USAGE = "use all, N, A-B, A,B,C or concat:A,B,C (0-based blocks), joined with ';'"
GRID_USAGE = "use NAME=V1,V2,... e.g. C=0.01,1,100 or k=1,5,10"


class StudyError(AttribError, ValueError):
    """A study option that cannot be satisfied; the message names the option and the valid values."""


# ------------------------------------------------------------------------------------------ layers
def parse_layers(spec: str, n_blocks: int) -> list[tuple[int, ...]]:
    """Layer spec -> list of block tuples (one tuple = one feature vector).

    ``all`` | ``8`` | ``6-10`` | ``2,5,8`` | ``concat:9,10,11`` | ``concat:9-11``; several specs join
    with ``;`` (``all;concat:9,10,11``). Blocks are 0-based; a negative index counts from the end.
    """
    out: list[tuple[int, ...]] = []
    for part in (p.strip() for p in spec.split(";")):
        if part == "all":
            out.extend((i,) for i in range(n_blocks))
        elif part.startswith("concat:"):
            cat = _blocks(spec, part[len("concat:"):], n_blocks)
            if len(set(cat)) != len(cat):
                raise StudyError(f"--layers {spec!r}: a block repeats in {part}")
            out.append(tuple(cat))
        elif part:
            out.extend((b,) for b in _blocks(spec, part, n_blocks))
    if not out:
        raise StudyError(f"--layers {spec!r}: no layers; {LAYERS_USAGE}")
    return list(dict.fromkeys(out))


def _blocks(spec: str, part: str, n_blocks: int) -> list[int]:
    """``2,5-7`` -> [2, 5, 6, 7] (``spec`` is the whole option, named in errors)."""
    out = []
    for tok in (t.strip() for t in part.split(",")):
        m = re.fullmatch(r"(\d+)-(\d+)", tok)
        if m:
            lo, hi = _block(spec, m.group(1), n_blocks), _block(spec, m.group(2), n_blocks)
            if lo > hi:
                raise StudyError(f"--layers {spec!r}: empty range {tok}")
            out.extend(range(lo, hi + 1))
        else:
            out.append(_block(spec, tok, n_blocks))
    return out


def _block(spec: str, tok: str, n_blocks: int) -> int:
    try:
        v = int(tok)
    except ValueError:
        raise StudyError(f"--layers {spec!r}: {tok!r} is not a block number; {LAYERS_USAGE}") from None
    if not -n_blocks <= v < n_blocks:
        raise StudyError(f"--layers {spec!r}: block {v} out of range 0..{n_blocks - 1}")
    return v % n_blocks


def layer_name(layer: Sequence[int]) -> str:
    """A layer as result lines and saved heads write it: ``8`` or ``concat:9,10,11``."""
    return str(layer[0]) if len(layer) == 1 else "concat:" + ",".join(map(str, layer))


def parse_layer_name(name: str) -> tuple[int, ...]:
    """The inverse of :func:`layer_name`."""
    return tuple(int(b) for b in name[len("concat:"):].split(",")) if name.startswith("concat:") else (int(name),)


# -------------------------------------------------------------------------------------------- grid
def parse_grid(specs: Iterable[str]) -> dict[str, list]:
    """``C=0.01,1,100`` / ``k=1,5,10`` (repeatable) -> {param: values}; overrides a head's default path."""
    grid: dict[str, list] = {}
    for spec in specs:
        name, sep, vals = spec.partition("=")
        name = name.strip()
        if not sep or not name or not vals.strip():
            raise StudyError(f"--grid {spec!r}: {GRID_USAGE}")
        out = []
        for tok in vals.split(","):
            tok = tok.strip()
            try:
                out.append(int(tok) if re.fullmatch(r"[+-]?\d+", tok) else float(tok))
            except ValueError:
                raise StudyError(f"--grid {spec!r}: {tok!r} is not a number") from None
        grid[name] = out
    return grid


# ------------------------------------------------------------------------------- shots and names
def shots_name(shots: int | None) -> str:
    """Shots as result lines write them: ``5``, or ``all`` for every training image."""
    return "all" if shots is None else str(shots)


def expand_names(spec: str, registry: dict) -> list[str]:
    """``a,b`` -> [a, b]; ``all`` -> every registered name."""
    names = [t.strip() for t in spec.split(",") if t.strip()]
    return list(registry) if names == ["all"] else list(dict.fromkeys(names))
