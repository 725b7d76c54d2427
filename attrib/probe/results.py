"""The results file of a study, ``results.jsonl``: read it, repair it, lock it, append to it.

One JSON line per finished (split, layer, head, score, shots, seed, protocol, params), appended as soon as it is
known, so an interrupted study resumes without redoing finished lines: a line torn by a kill (no newline
after it) is cut off by :func:`repair_tail` and redone.

Why apart from the study: ``attrib report`` only reads results; this module needs neither the feature
store (h5py) nor the heads (scikit-learn), so reading results loads neither.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

from attrib import jsonio
from attrib.probe.options import StudyError
from attrib.probe.params import params_key

RESULTS = "results.jsonl"


def line_key(d: dict[str, Any]) -> tuple:
    """What identifies a result line: a study skips the keys already in the file. Lines run with other
    ``--param`` settings (``config.params``) are other lines."""
    return (str(d["split"]), str(d["layer"]), d["head"], d["score"], str(d["shots"]), int(d["seed"]),
            d.get("protocol", "clean"), params_key((d.get("config") or {}).get("params")))


def read_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every result line of ``path`` (a results folder or file). A torn last line (a study killed, or
    still running) is ignored; any other unreadable line is an error naming it."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS
    if not path.exists():
        raise StudyError(f"{path}: no results yet; run `attrib probe ... --out {path.parent}` first")
    data = path.read_bytes()
    lines = data.split(b"\n")
    out = []
    for i, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            d = json.loads(raw)
            line_key(d)
        except (ValueError, KeyError, TypeError) as exc:
            if i == len(lines):  # no newline after it: torn, redone by the next `attrib probe`
                continue
            raise StudyError(f"{path}:{i}: not a result line ({exc}); delete that line (a rerun of "
                             "`attrib probe` redoes it)") from None
        out.append(d)
    return out


def repair_tail(path: Path) -> int:
    """Cut a last line torn by a kill (no trailing newline); returns the bytes removed."""
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return 0
        size = f.seek(0, os.SEEK_END)
        pos, chunk = size, 1 << 16
        while pos > 0:  # find the last newline, reading backwards
            start = max(0, pos - chunk)
            f.seek(start)
            i = f.read(pos - start).rfind(b"\n")
            if i >= 0:
                cut = start + i + 1
                break
            pos = start
        else:
            cut = 0
        f.truncate(cut)
        return size - cut


@contextlib.contextmanager
def appending(path: Path) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A function that appends one result line to ``path`` and flushes it, so a kill loses no finished
    line. Lines must already be JSON-ready (:func:`attrib.jsonio.to_jsonable`)."""
    with open(path, "a") as out:
        def append(line: dict[str, Any]) -> None:
            out.write(jsonio.dumps(line) + "\n")
            out.flush()

        yield append


@contextlib.contextmanager
def exclusive(out_dir: Path) -> Iterator[None]:
    """One study at a time per results folder: two writers would duplicate and interleave lines."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    with open(out_dir / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise StudyError(f"another `attrib probe` is writing to {out_dir}; wait for it or use another "
                             "--out") from None
        yield


def evaluated_on(d: dict[str, Any]) -> tuple[str, str | None]:
    """(ids joined by '+', identity hash) of the features a line's validation and test rows were read from:
    its ``eval_features``, or its own feature set for lines without them (written before they existed)."""
    ids = d.get("eval_features") or [d["feature_set"]]
    return "+".join(ids), d.get("eval_feature_hash", d.get("feature_hash"))


def check_compatible(existing: list[dict], feature_set: str, feature_hash: str,
                     digests: dict[tuple[str, int], str], paths: dict[str, Any], results: Path,
                     eval_features: list[str] | None = None, eval_hash: str | None = None) -> None:
    """Refuse to append results that could not be aggregated with those already in the file.

    ``digests``: the rows fingerprint of each (split, seed) about to run; ``paths``: each head's path
    summary (the ``config.path`` of its lines), or None for a head without a path. ``eval_features``,
    ``eval_hash``: the features validation and test rows are read from (default: ``feature_set``); other
    evaluation features make another study, as another feature set does.
    """
    problems = []
    same_fs = [d["feature_set"] == feature_set and d.get("feature_hash", feature_hash) == feature_hash
               for d in existing]
    other_fs = sorted({f"{d['feature_set']} ({d.get('feature_hash', '?')})" for d, same in zip(existing, same_fs)
                       if not same})
    if other_fs:
        problems.append(f"it holds results of feature set {', '.join(other_fs)}, not {feature_set} ({feature_hash})")
    ours = ("+".join(eval_features) if eval_features else feature_set, eval_hash or feature_hash)
    other_eval = sorted({f"{ids} ({h or '?'})" for (ids, h), same in zip(map(evaluated_on, existing), same_fs)
                         if same and (ids != ours[0] or (h or ours[1]) != ours[1])})
    if other_eval:
        problems.append(f"its results were evaluated on feature set {', '.join(other_eval)}, not {ours[0]} "
                        f"({ours[1]}) (--eval-features)")
    seen = set()
    for d in existing:
        k = (str(d["split"]), int(d["seed"]))
        if k in digests and d.get("rows") not in (None, digests[k]) and k not in seen:
            seen.add(k)
            problems.append(f"split {k[0]} seed {k[1]} had other rows (split definition or --*-per-class "
                            "changed)")
        h = d["head"]
        old = (d.get("config") or {}).get("path")
        if h in paths and old and paths[h] and old.get("sha") != paths[h]["sha"] and ("grid", h) not in seen:
            seen.add(("grid", h))
            problems.append(f"head {h} was swept over another {old['param']} grid ({old['n']} values "
                            f"{old['min']:g}..{old['max']:g})")
    if problems:
        raise StudyError(f"{results} cannot take these results: " + "; ".join(problems) +
                         ". Use another --out folder (or delete that file to start over).")
