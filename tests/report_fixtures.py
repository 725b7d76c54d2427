"""A study's results folder as `attrib probe --save-scores` writes it, for report tests.

Result lines whose metrics are computed by attrib's own :func:`attrib.probe.metrics.evaluate` from
per-sample outputs, and those outputs in one ``.npz`` per line under ``scores/`` in the format of the
saved-scores contract (``classes``, ``y_true``, ``y_pred``, ``s_known``, ``s_unknown``,
``pred_unknown``, ``unknown_source``, ``paths_known``, ``paths_unknown``), the line naming it in
``scores_file``. The test images are the ``val`` images of a synthetic feature set
(:func:`tests.synthetic_features.make_feature_set`), so feature maps can read their features.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from attrib.data.demo import GENERATORS
from attrib.probe.metrics import evaluate

LABEL = "random-init: pipeline check, not CLIP features"
# split -> (known generators, unknown generators); class 0 is real
SPLITS = {str(i + 1): (GENERATORS[i:i + 3], tuple(g for g in GENERATORS if g not in GENERATORS[i:i + 3]))
          for i in range(5)}


def scores_for(paths: dict[str, list[str]], known: Sequence[str], unknown: Sequence[str], quality: float,
               seed: int) -> dict[str, np.ndarray]:
    """Per-sample outputs of a head that classifies known images right with probability ``0.5 + quality / 2``
    and scores them ``quality`` higher, on average, than unknown ones (each generator shifted its own way)."""
    rng = np.random.default_rng(seed)
    classes = ["real", *known]
    y_true = np.concatenate([np.full(len(paths[c]), i) for i, c in enumerate(classes)]).astype(np.int64)
    wrong = rng.random(len(y_true)) > 0.5 + quality / 2
    y_pred = np.where(wrong, (y_true + 1) % len(classes), y_true).astype(np.int64)
    s_known = rng.normal(quality, 0.5, len(y_true)) - 0.3 * wrong
    src = np.concatenate([[g] * len(paths[g]) for g in unknown])
    s_unknown = np.concatenate([rng.normal(-0.2 * i, 0.5, len(paths[g])) for i, g in enumerate(unknown)])
    return {"classes": np.array(classes), "y_true": y_true, "y_pred": y_pred, "s_known": s_known,
            "s_unknown": s_unknown, "pred_unknown": rng.integers(0, len(classes), len(src)).astype(np.int64),
            "unknown_source": src.astype(str),
            "paths_known": np.array([p for c in classes for p in paths[c]]),
            "paths_unknown": np.array([p for g in unknown for p in paths[g]])}


def write_study(folder: Path, fs=None, splits: Sequence[str] = ("1", "2"), layers: Sequence[str] = ("0", "1", "2"),
                seeds: Sequence[int] = (0,), shots: Sequence[str] = ("all",), protocol: str = "clean",
                label: str = LABEL, per_source: int = 12, scores: bool = True, quality_shift: float = 0.0) -> Path:
    """``folder/results.jsonl`` and ``folder/scores/*.npz``: one line per (split, layer, shots, seed), head
    logreg + score msp. With ``fs`` (a feature set), test paths are its val images; the deeper the layer,
    the better the method (so the best method is the last single layer)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scores").mkdir(exist_ok=True)
    if fs is not None:
        by_src: dict[str, list[str]] = {}
        for p, s, sub in fs.images:
            if sub == "val":
                by_src.setdefault(s, []).append(p)
    else:
        by_src = {s: [f"{s}/val/{i:03d}.png" for i in range(per_source)] for s in ("real",) + GENERATORS}
    lines = []
    for split in splits:
        known, unknown = SPLITS[split]
        for k, layer in enumerate(layers):
            for sh in shots:
                for seed in seeds:
                    quality = 0.3 + 0.5 * k / max(len(layers) - 1, 1) + quality_shift
                    arr = scores_for(by_src, known, unknown, quality, seed * 100 + k * 10 + int(split))
                    classes = list(arr["classes"])
                    m = evaluate(arr["y_true"], arr["y_pred"], arr["s_known"], arr["s_unknown"], arr["pred_unknown"],
                                 arr["unknown_source"], np.arange(len(classes)), classes)
                    key = f"split{split}__layer{layer.replace(':', '-')}__logreg__msp__shots{sh}__seed{seed}"
                    rel = f"scores/{key}__{protocol}.npz"
                    if scores:
                        np.savez(folder / rel, **arr)
                    lines.append({"feature_set": fs.id if fs is not None else "fs",
                                  "feature_hash": fs.manifest.identity_hash if fs is not None else "0",
                                  "label": label, "split": split, "layer": layer, "head": "logreg", "score": "msp",
                                  "shots": sh, "seed": seed, "protocol": protocol, "hparams": {"C": 1.0}, **m,
                                  "classes": classes, "known": list(known), "unknown": list(unknown),
                                  "n": {"train": 90, "test": len(arr["y_true"]), "test_unknown": len(arr["s_unknown"])},
                                  "rows": f"rows{split}{seed}", "config": {"tpr": 0.95},
                                  **({"scores_file": rel} if scores else {})})
    (folder / "results.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))
    return folder
