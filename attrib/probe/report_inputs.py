"""What a report reads beside ``results.jsonl``: the per-sample scores a study saved, the thresholds of
the heads it saved, and the feature sets its lines were computed on.

Why apart from the plots: each of these inputs may be missing (a study run without ``--save-scores``, no
``--save-head``, a cache on another machine), and a report must then say what it skipped and why, not
fail and not guess. Every finder here returns what it found and a note for what it did not.

Saved scores are those of ``attrib probe --save-scores`` (:mod:`attrib.probe.scorefile`): one ``.npz``
per result line, its path (relative to the results folder) in the line's ``scores_file``; a report checks
that each array is there with the kind of values :data:`SCORE_KINDS` says before drawing from it.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from attrib.probe.options import StudyError
from attrib.probe.scorefile import ARRAYS, read_scores

# each array of a scores file -> the numpy dtype kinds it may have (strings are fixed-width unicode)
SCORE_KINDS = {"classes": "U", "y_true": "iu", "y_pred": "iu", "s_known": "f", "s_unknown": "f",
               "pred_unknown": "iu", "unknown_source": "U", "paths_known": "U", "paths_unknown": "U"}
SAME_LENGTH = (("y_true", "y_pred", "s_known", "paths_known"),
               ("s_unknown", "pred_unknown", "unknown_source", "paths_unknown"))
HEAD_FILE = "head.json"  # attrib.probe.persist.JSON_NAME (importing persist loads scikit-learn)
REDO = "rerun the study with `attrib probe ... --save-scores` into a new --out folder"


@dataclass
class RunScores:
    """The saved per-sample outputs of one result line (one split, layer, head, score, shots, seed)."""

    line: dict[str, Any]
    path: Path
    classes: list[str]
    y_true: np.ndarray
    y_pred: np.ndarray
    s_known: np.ndarray
    s_unknown: np.ndarray
    pred_unknown: np.ndarray
    unknown_source: np.ndarray
    paths_known: np.ndarray
    paths_unknown: np.ndarray

    @property
    def correct(self) -> np.ndarray:
        """Whether each known test image was classified correctly (what OSCR counts)."""
        return self.y_true == self.y_pred

    @property
    def split(self) -> str:
        return str(self.line["split"])

    @property
    def unknown_generators(self) -> list[str]:
        """Unknown generators in the order the line lists them (then any other, sorted)."""
        present = set(self.unknown_source.tolist())
        listed = [g for g in self.line.get("unknown") or [] if g in present]
        return listed + sorted(present - set(listed))


def load_scores(results_dir: str | os.PathLike, line: dict[str, Any],
                loaded: dict[str, RunScores] | None = None) -> RunScores | None:
    """The saved scores of ``line``, or None when the line has none (no ``scores_file``). A file that
    is missing or does not hold the contract's arrays is an error naming it. ``loaded``: files already
    read, by ``scores_file`` (filled in), so that a report reads each file once."""
    rel = line.get("scores_file")
    if not rel:
        return None
    if loaded is not None:
        if rel not in loaded:
            loaded[rel] = load_scores(results_dir, line)
        return loaded[rel]
    path = Path(results_dir) / rel
    if not path.is_file():
        raise StudyError(f"{path}: the scores file of split {line['split']} layer {line['layer']} "
                         f"{line['head']}+{line['score']} is missing; {REDO}")
    try:
        arrays = read_scores(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # damaged or cut short
        raise StudyError(f"{path}: unreadable scores file ({exc}); {REDO}") from None
    problems = [f"no {k}" for k in ARRAYS if k not in arrays]
    problems += [f"{k} is {arrays[k].dtype}" for k, kinds in SCORE_KINDS.items()
                 if k in arrays and arrays[k].dtype.kind not in kinds]
    for group in SAME_LENGTH:
        sizes = {k: len(arrays[k]) for k in group if k in arrays}
        if len(set(sizes.values())) > 1:
            problems.append("lengths differ: " + ", ".join(f"{k} {n}" for k, n in sizes.items()))
    n_classes = len(arrays.get("classes", ()))
    if not problems and len(arrays["y_true"]) and max(arrays["y_true"].max(), arrays["y_pred"].max()) >= n_classes:
        problems.append(f"labels beyond the {len(arrays['classes'])} classes")
    if problems:
        raise StudyError(f"{path}: not a scores file of `attrib probe --save-scores` ({'; '.join(problems)}); {REDO}")
    return RunScores(line, path, [str(c) for c in arrays["classes"]],
                     **{k: arrays[k] for k in ARRAYS if k != "classes"})


def scores_by_split(results_dir: str | os.PathLike, runs: Iterable[dict[str, Any]],
                    loaded: dict[str, RunScores] | None = None) -> dict[str, RunScores]:
    """For each split of a method's runs, the saved scores of its lowest seed that has some
    (``loaded``: as for :func:`load_scores`)."""
    out: dict[str, RunScores] = {}
    for line in sorted(runs, key=lambda r: int(r["seed"])):
        split = str(line["split"])
        if split not in out:
            found = load_scores(results_dir, line, loaded)
            if found is not None:
                out[split] = found
    return out


# ----------------------------------------------------------------------------- saved heads' thresholds
@dataclass(frozen=True)
class HeadThreshold:
    """The rejection threshold of a head saved by ``attrib probe --save-head``, and the result line it
    belongs to: the same split (same rows), layer, head, score and shots, seed 0, clean protocol."""

    path: Path
    threshold: float
    tpr: float
    split: str
    layer: str
    head: str
    score: str
    shots: str
    rows: str
    feature_set: str

    def matches(self, line: dict[str, Any]) -> bool:
        return (str(line["split"]), str(line["layer"]), line["head"], line["score"], str(line["shots"]),
                int(line["seed"]), line.get("protocol", "clean")) == (
            self.split, self.layer, self.head, self.score, self.shots, 0, "clean") and \
            line.get("rows", self.rows) == self.rows and line.get("feature_set") == self.feature_set


def find_saved_heads(results_dir: str | os.PathLike,
                     given: Iterable[str | os.PathLike] = ()) -> tuple[list[HeadThreshold], list[str]]:
    """Saved heads: the folders in ``given`` (``attrib report --head DIR``) and every folder directly
    under ``results_dir`` that holds one (``--save-head RESULTS/head`` puts it there). (heads, notes)."""
    from attrib.probe.options import layer_name

    results_dir = Path(results_dir)
    found = [Path(d) for d in given]
    if results_dir.is_dir():
        found += sorted(d for d in results_dir.iterdir() if (d / HEAD_FILE).is_file() and d not in found)
    heads, notes = [], []
    if found:  # persist loads scikit-learn: only when there is a head to read
        from attrib.probe.persist import HeadFileError, load_head
    for folder in found:
        try:
            saved = load_head(folder)
        except HeadFileError as exc:
            notes.append(f"saved head not used: {exc}")
            continue
        split = saved.info.get("split") or {}
        heads.append(HeadThreshold(folder, saved.threshold, float(saved.info.get("tpr", float("nan"))),
                                   str(split.get("name")), layer_name(saved.layer), saved.head_name,
                                   saved.score_name, str(saved.info.get("shots")), str(split.get("rows")),
                                   saved.feature_set))
    return heads, notes


# ------------------------------------------------------------------------------------------ feature sets
def feature_set_ids(line: dict[str, Any]) -> list[str]:
    """The feature set(s) a line's test rows were read from: ``eval_features`` when the study had
    train/eval feature sets (or several), else ``feature_set``."""
    ids = line.get("eval_features") or line.get("feature_set") or []
    return [ids] if isinstance(ids, str) else [str(i) for i in ids]


def find_test_features(line: dict[str, Any], cache: str | os.PathLike | None,
                       given: Iterable[str | os.PathLike] = ()) -> tuple[Any, str]:
    """The features a line's test images were read from (a feature set, or the union of several, read
    as the study read them), found by id among ``given`` folders (``attrib report --features DIR``), then
    as ``cache/<id>``; (None, note) when one is missing or is not what the line was computed on.

    A folder renamed since the study is recognised by its identity hash."""
    from attrib.probe.results import evaluated_on
    from attrib.store import FeatureSet, StoreError
    from attrib.union import UnionError, open_features

    opened = []
    for d in given:
        try:
            opened.append(FeatureSet.open(d))
        except StoreError as exc:
            return None, f"--features {d}: {exc}"
    ids, want_hash = feature_set_ids(line), evaluated_on(line)[1]
    folders = []
    for fid in ids:
        match = [fs.path for fs in opened if fs.id == fid or (len(ids) == 1 and fs.manifest.identity_hash == want_hash)]
        if not match and cache is not None and FeatureSet.exists(Path(cache) / fid):
            match = [Path(cache) / fid]
        if not match and cache is None and not opened:
            return None, (f"no feature-set folder to read feature set {fid} from: `attrib report RESULTS --cache DIR` "
                          "(or --features DIR) draws it")
        if not match:
            where = " or ".join(([f"under {cache}"] if cache is not None else []) +
                                (["among --features"] if opened else []))
            return None, (f"feature set {fid} is not {where}; give its folder with `attrib report --features DIR` "
                          "(or --cache DIR)")
        folders.append(match[0])
    try:
        reader = open_features([str(f) for f in folders], "--features")
    except (StoreError, UnionError) as exc:
        return None, str(exc)
    if want_hash not in (None, reader.manifest.identity_hash):
        return None, (f"{' + '.join(map(str, folders))} is not what the results were computed on (identity "
                      f"{reader.manifest.identity_hash}, the results say {want_hash})")
    return reader, ""
