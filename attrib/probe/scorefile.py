"""Per-sample test scores of a result line (``attrib probe --save-scores``): one ``.npz`` per line.

Why: a result line holds aggregate metrics only. With each line's per-sample scores, predictions and
labels on disk, any metric (another convention, a per-image analysis, a bootstrap interval) can be
computed later without refitting a head. Files go to ``OUT/scores/<line key>.npz``; the line records the
path relative to OUT as ``scores_file``.

Arrays (every one loads with ``np.load(path, allow_pickle=False)``: numbers and fixed-width strings only):

``classes``        str, the known classes (a label is an index into it)
``y_true``         int64, labels of the known test images
``y_pred``         int64, the head's predictions for them
``s_known``        float64, their open-set scores (higher = more likely known)
``s_unknown``      float64, the open-set scores of the unknown generators' test images
``pred_unknown``   int64, the known class the head predicts for each unknown test image
``unknown_source`` str, the generator of each unknown test image
``paths_known``, ``paths_unknown``  str, image paths relative to the dataset root

Files are written atomically (:mod:`attrib.atomic`): a kill leaves the old file or the new one.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from attrib.atomic import publish, temporary

SCORES_DIR = "scores"
ARRAYS = ("classes", "y_true", "y_pred", "s_known", "s_unknown", "pred_unknown", "unknown_source", "paths_known",
          "paths_unknown")
_DTYPES = {"y_true": np.int64, "y_pred": np.int64, "pred_unknown": np.int64, "s_known": np.float64,
           "s_unknown": np.float64}


def scores_name(key: Sequence[Any]) -> str:
    """A file name for a result line's key: its fields joined, characters other than letters, digits,
    ``.``, ``_``, ``-`` and ``=`` replaced by ``-`` (``concat:9,10`` -> ``concat-9-10``), and a short hash
    of the exact key, so two keys that read alike after that replacement still get two files."""
    split, layer, head, score, shots, seed, protocol, *rest = (str(k) for k in key)
    text = f"split={split}_layer={layer}_{head}+{score}_shots={shots}_seed={seed}_{protocol}"
    safe = re.sub(r"[^A-Za-z0-9._=+-]", "-", text)
    digest = hashlib.sha256(repr(tuple(str(k) for k in key)).encode()).hexdigest()[:10]
    return f"{safe}-{digest}.npz"


def _array(name: str, values: Any) -> np.ndarray:
    if name in _DTYPES:
        return np.ascontiguousarray(values, dtype=_DTYPES[name]).ravel()
    return np.asarray([str(v) for v in values], dtype=str)  # fixed-width unicode: no pickle needed


def write_scores(out_dir: str | os.PathLike, key: Sequence[Any], **arrays: Any) -> str:
    """Write one line's arrays (all of :data:`ARRAYS`) to ``out_dir/scores/<name>.npz`` atomically;
    returns the path relative to ``out_dir`` (the line's ``scores_file``)."""
    missing = [a for a in ARRAYS if a not in arrays]
    extra = [a for a in arrays if a not in ARRAYS]
    if missing or extra:
        raise ValueError(f"write_scores: missing {missing}, unexpected {extra}")
    folder = Path(out_dir) / SCORES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    rel = f"{SCORES_DIR}/{scores_name(key)}"
    with temporary(Path(out_dir) / rel) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **{a: _array(a, arrays[a]) for a in ARRAYS})
        publish(tmp, Path(out_dir) / rel)
    return rel


def read_scores(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a scores file (no pickle), by name."""
    with np.load(path, allow_pickle=False) as z:
        return {a: z[a] for a in z.files}
