"""Studies: sweep splits x layers x heads x scores x shots x seeds over one feature set.

Every finished (split, layer, head, score, shots, seed) becomes one JSON line in ``results.jsonl``,
appended as soon as it is known, so an interrupted study resumes without redoing finished lines.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attrib.probe.heads import DEFAULT_CS, HEADS, LogisticProbe
from attrib.probe.metrics import auroc, open_set_summary
from attrib.data.splits import SplitRows, SplitSource
from attrib.probe.scorers import SCORERS
from attrib.store import FeatureSet

RESULTS = "results.jsonl"
PROTOCOLS = ("clean", "paper")


class StudyError(ValueError):
    """A study option that cannot be satisfied; the message names the option and the valid values."""


def parse_layers(spec: str, n_blocks: int) -> list[tuple[int, ...]]:
    """Layer spec -> list of block tuples (one tuple = one feature vector).

    ``all`` | ``8`` | ``6-10`` | ``2,5,8`` | ``concat:9,10,11``; several specs join with ``;``
    (``all;concat:9,10,11``). Blocks are 0-based; a negative index counts from the end (``-1`` = last).
    """
    usage = "use all, N, A-B, A,B,C or concat:A,B,C (0-based blocks), joined with ';'"

    def block(tok: str) -> int:
        try:
            v = int(tok)
        except ValueError:
            raise StudyError(f"--layers {spec!r}: {tok!r} is not a block number; {usage}") from None
        if not -n_blocks <= v < n_blocks:
            raise StudyError(f"--layers {spec!r}: block {v} out of range 0..{n_blocks - 1}")
        return v % n_blocks

    out: list[tuple[int, ...]] = []
    for part in (p.strip() for p in spec.split(";")):
        if part == "all":
            out.extend((i,) for i in range(n_blocks))
        elif part.startswith("concat:"):
            out.append(tuple(block(t) for t in part[len("concat:"):].split(",")))
        else:
            for tok in (t.strip() for t in part.split(",")):
                m = re.fullmatch(r"(\d+)-(\d+)", tok)
                if m:
                    lo, hi = block(m.group(1)), block(m.group(2))
                    if lo > hi:
                        raise StudyError(f"--layers {spec!r}: empty range {tok}")
                    out.extend((i,) for i in range(lo, hi + 1))
                else:
                    out.append((block(tok),))
    if not out:
        raise StudyError(f"--layers {spec!r}: no layers; {usage}")
    return list(dict.fromkeys(out))


def layer_name(layer: tuple[int, ...]) -> str:
    return str(layer[0]) if len(layer) == 1 else "concat:" + ",".join(map(str, layer))


@dataclass
class StudyConfig:
    splits: SplitSource
    layers: list[tuple[int, ...]]
    heads: list[str] = field(default_factory=lambda: ["logreg"])
    scores: list[str] = field(default_factory=lambda: ["msp"])
    shots: list[int | None] = field(default_factory=lambda: [None])
    seeds: int = 1
    protocol: str = "clean"
    Cs: list[float] = field(default_factory=lambda: list(DEFAULT_CS))

    def validate(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise StudyError(f"--protocol {self.protocol!r}: use one of {', '.join(PROTOCOLS)}")
        bad = [h for h in self.heads if h not in HEADS]
        if bad:
            raise StudyError(f"--heads: {', '.join(bad)} not available; available: {', '.join(HEADS)}")
        bad = [s for s in self.scores if s not in SCORERS]
        if bad:
            raise StudyError(f"--scores: {', '.join(bad)} not available; available: {', '.join(SCORERS)}")


def _features(fs: FeatureSet, layer: tuple[int, ...], rows: np.ndarray) -> np.ndarray:
    return np.concatenate([fs.block(b, rows) for b in layer], axis=1) if len(layer) > 1 else fs.block(layer[0], rows)


def _shots(rows: SplitRows, shots: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class subset of the training rows; identical across heads and layers for a given seed."""
    if shots is None:
        return rows.train, rows.y_train
    rng = np.random.default_rng([seed, shots])
    keep = []
    for c in np.unique(rows.y_train):
        idx = np.flatnonzero(rows.y_train == c)
        keep.extend(rng.choice(idx, size=min(shots, len(idx)), replace=False).tolist())
    keep = np.sort(np.asarray(keep, dtype=np.int64))
    return rows.train[keep], rows.y_train[keep]


def _select_logreg(Xtr, ytr, Xva, yva, Xvu, Cs, protocol):
    """Fit the C path and keep the C with the best validation accuracy (clean) or AUROC (paper)."""
    best, best_val, best_head = None, -np.inf, None
    for C, head in zip(Cs, LogisticProbe.fit_path(Xtr, ytr, Cs)):
        if protocol == "paper":
            msp_k = SCORERS["msp"](head).score_samples(Xva)
            msp_u = SCORERS["msp"](head).score_samples(Xvu)
            val = auroc(msp_k, msp_u)
        else:
            val = float(np.mean(head.predict(Xva) == yva))
        if val > best_val + 1e-12:
            best, best_val, best_head = C, val, head
    return best_head, {"C": float(best), "val_metric": float(best_val)}


def job_key(d: dict[str, Any]) -> tuple:
    return (str(d["split"]), str(d["layer"]), d["head"], d["score"], str(d["shots"]), int(d["seed"]))


def _done_keys(path: Path) -> set[tuple]:
    if not path.exists():
        return set()
    keys = set()
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    keys.add(job_key(json.loads(line)))
                except (ValueError, KeyError):
                    continue  # a torn last line from a killed run is simply redone
    return keys


def run_study(fs: FeatureSet, cfg: StudyConfig, out_dir: str | os.PathLike, progress: bool = True) -> Path:
    """Run every missing line of the study; returns the path of ``results.jsonl``."""
    from tqdm import tqdm

    cfg.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = out_dir / RESULTS
    done = _done_keys(results)
    jobs = [(cfg.splits.split(name), layer, shots, seed) for name in cfg.splits.names()
            for layer in cfg.layers for shots in cfg.shots for seed in range(cfg.seeds)]
    bar = tqdm(total=len(jobs), desc="probe", unit="job", disable=not progress)
    with open(results, "a") as out:
        for sp, layer, shots, seed in jobs:
            keys = [(sp.name, layer_name(layer), h, s, str(shots if shots is not None else "all"), seed)
                    for h in cfg.heads for s in cfg.scores]
            if all(k in done for k in keys):
                bar.update()
                continue
            rows = cfg.splits.rows(sp.name, seed)
            t0 = time.perf_counter()
            tr, ytr = _shots(rows, shots, seed)
            X = {k: _features(fs, layer, r) for k, r in
                 (("train", tr), ("val", rows.val), ("test", rows.test), ("val_unknown", rows.val_unknown),
                  ("test_unknown", rows.test_unknown))}
            t_read = time.perf_counter() - t0
            for head_name in cfg.heads:
                t1 = time.perf_counter()
                head, hp = _select_logreg(X["train"], ytr, X["val"], rows.y_val, X["val_unknown"], cfg.Cs,
                                          cfg.protocol)
                t_fit = time.perf_counter() - t1
                y_pred = head.predict(X["test"])
                for score_name in cfg.scores:
                    key = (sp.name, layer_name(layer), head_name, score_name,
                           str(shots if shots is not None else "all"), seed)
                    if key in done:
                        continue
                    scorer = SCORERS[score_name](head).fit(X["train"], ytr)
                    s_known = scorer.score_samples(X["test"])
                    s_unknown = scorer.score_samples(X["test_unknown"])
                    line = {
                        "feature_set": fs.id, "label": fs.label, "split": sp.name,
                        "layer": layer_name(layer), "head": head_name, "score": score_name,
                        "shots": shots if shots is not None else "all", "seed": seed, "protocol": cfg.protocol,
                        "hparams": hp, **open_set_summary(rows.y_test, y_pred, s_known, s_unknown),
                        "n": rows.sizes(), "classes": list(sp.classes), "unknown": list(sp.unknown),
                        "seconds": {"read": round(t_read, 4), "fit": round(t_fit, 4)},
                    }
                    out.write(json.dumps(line) + "\n")
                    out.flush()
            bar.update()
    bar.close()
    return results


def read_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS
    if not path.exists():
        raise StudyError(f"{path}: no results yet; run `attrib probe ... --out {path.parent}` first")
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
    return out

