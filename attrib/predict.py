"""Attribute new images with a saved head: which known generator made each one, or "unknown".

Why it goes through the stage-1 runner and the cache: an analyst's folder can hold 100k images, so the
features must be extracted in batches with the same failure handling and resume as any extraction, and
they must be exactly the features the head was trained on (same backbone, weights, preprocessing, view).
The prediction features land in the cache like any other feature set: rerunning with another threshold,
or after an interruption, costs no second forward pass.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from attrib import atomic
from attrib.data.catalog import CatalogError, ImageList, walk_images
from attrib.data.filenames import TAB_IN_FILE, Skipped, escape_path, unlistable
from attrib.data.images import IMAGE_SUFFIXES, is_image_name
from attrib.errors import AttribError
from attrib.extract.backbone import RANDOM_INIT, Backbone, load_backbone
from attrib.extract.runner import RunConfig, extract
from attrib.extract.views import View
from attrib.manifest import Manifest
from attrib.output_paths import check_output, make_folder
from attrib.probe.persist import UNKNOWN, SavedHead
from attrib.store import FeatureSet

FORMATS = ("csv", "jsonl")
SOURCE = "unlabelled"
SUBSET = "predict"
ERROR = "error"
CHUNK = 10_000  # rows per head application: bounded memory for any input size


class PredictError(AttribError, ValueError):
    """Inputs or the head cannot be used as asked; the message names the file and what to do."""


def collect_images(inputs: Sequence[str | os.PathLike]) -> ImageList:
    """Files, folders (searched recursively) and list files (one path per line) -> one image list.

    A file with an image suffix is an image (even if it turns out unreadable: it gets an error row); any
    other file is read as a list of paths, relative to the list's folder unless absolute. Paths are
    made absolute so predictions name the files unambiguously; duplicates are kept once.
    """
    if not inputs:
        raise PredictError("no images given: pass files, folders or list files")
    paths: list[str] = []
    skipped = Skipped()
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            found = list(walk_images(p, skipped))
            if not found:
                raise PredictError(f"{p}: no image files in this folder (looked recursively)")
            paths.extend(os.path.abspath(f) for f in found)
        elif p.is_file() and is_image_name(p.name) and unlistable(str(p)):
            skipped.add(TAB_IN_FILE, str(p))
        elif p.is_file() and is_image_name(p.name):
            paths.append(os.path.abspath(p))
        elif p.is_file():
            paths.extend(_read_list(p))
        else:
            raise PredictError(f"{p}: no such file or folder")
    skipped.print()
    unique = sorted(set(paths))
    if not unique:
        raise PredictError("no image left to attribute (see the notes above)")
    return ImageList.from_rows([(q, SOURCE, SUBSET) for q in unique], root="", where="predict inputs")


def _read_list(path: Path) -> list[str]:
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                entry = line.split("\t", 1)[0]
                if not is_image_name(entry):
                    raise PredictError(f"{path}:{lineno}: {entry!r} does not look like an image file; a list file "
                                       "holds one image path per line")
                q = Path(entry).expanduser()
                out.append(os.path.abspath(q if q.is_absolute() else path.parent / q))
    except UnicodeDecodeError:
        raise PredictError(f"{path}: not an image file attrib reads ({', '.join(sorted(IMAGE_SUFFIXES))}) and not a "
                           "list file (text, one image path per line)") from None
    if not out:
        raise PredictError(f"{path}: no image paths listed")
    return out


def pretrained_for(manifest: Manifest, override: str | None = None) -> str | None:
    """The ``--pretrained`` value that rebuilds the backbone of a feature set's manifest."""
    if override:
        return override
    if manifest.weights == RANDOM_INIT:
        return RANDOM_INIT
    if manifest.checkpoint:
        ckpt = manifest.checkpoint
        if not os.path.isfile(ckpt):
            raise PredictError(f"the head's features were extracted with the checkpoint {ckpt}, which is not on "
                               "this machine: pass --pretrained /path/to/that/file (it is checked by sha256)")
        return ckpt
    if manifest.family == "timm" or str(manifest.model or "").startswith(("hf-hub:", "local-dir:")):
        return None
    return manifest.weights


def head_backbone(saved: SavedHead, pretrained: str | None = None) -> Backbone:
    """Load exactly the backbone the head's features came from, or fail naming what differs."""
    m = saved.manifest
    backbone = load_backbone(m.model, pretrained_for(m, pretrained), m.preprocess_name)
    now = Manifest.from_backbone(backbone.spec, view=m.view or "none")
    diffs = saved.extraction_mismatch(now)
    if diffs:
        raise PredictError("this backbone does not reproduce the head's features:\n  - " + "\n  - ".join(diffs) +
                           "\nUse the weights the head was trained with (--pretrained).")
    return backbone


@dataclass
class Prediction:
    feature_set: FeatureSet
    rows: int
    failed: int
    unknown: int
    out: Path


def _records(saved: SavedHead, fs: FeatureSet, k: int, threshold: float | None) -> Iterable[dict[str, Any]]:
    ok, errors = fs.status()
    images = fs.images
    for start in range(0, len(images), CHUNK):
        idx = np.arange(start, min(start + CHUNK, len(images)))
        good = idx[ok[idx]]
        res = saved.outputs(saved.features(fs, good), k=k, threshold=threshold) if good.size else None
        pos = {int(r): i for i, r in enumerate(good)}
        for r in idx.tolist():
            rec: dict[str, Any] = {"path": escape_path(images.paths[r])}  # text, even for a non-UTF-8 name
            if r in pos:
                i = pos[r]
                rec.update(prediction=str(res["prediction"][i]), score=float(res["score"][i]),
                           decision=str(res["decision"][i]),
                           top=[(str(s), float(p)) for s, p in zip(res["top_sources"][i], res["top_probabilities"][i])],
                           error="")
            else:
                rec.update(prediction="", score=None, decision=ERROR, top=[], error=errors[r])
            yield rec


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise PredictError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")


def check_out(out: str | os.PathLike) -> Path:
    """``out`` as a Path if a predictions file can be written there, else a PredictError saying why."""
    return check_output(out, "--out", PredictError, folder=False)


def write_predictions(records: Iterable[dict[str, Any]], out: Path, fmt: str, k: int) -> tuple[int, int, int]:
    """Write rows to ``out`` atomically (nothing is left behind on failure); returns (rows, failed, unknown)."""
    _check_format(fmt)
    out = check_out(out)
    make_folder(out.parent, "--out", PredictError)
    n = failed = unknown = 0
    with atomic.replacing(out, encoding="utf-8", newline="") as f:
        if fmt == "csv":
            w = csv.writer(f)
            w.writerow(["path", "prediction", "score", "decision"] +
                       [c for i in range(1, k + 1) for c in (f"top{i}_source", f"top{i}_probability")] + ["error"])
        for rec in records:
            n += 1
            failed += rec["decision"] == ERROR
            unknown += rec["decision"] == UNKNOWN
            if fmt == "csv":
                top = [c for s, p in rec["top"] for c in (s, f"{p:.6f}")]
                top += [""] * (2 * k - len(top))
                score = "" if rec["score"] is None else repr(rec["score"])
                w.writerow([rec["path"], rec["prediction"], score, rec["decision"], *top, rec["error"]])
            else:
                rec = {**rec, "top": [{"source": s, "probability": p} for s, p in rec["top"]]}
                f.write(json.dumps(rec) + "\n")
    return n, failed, unknown


def extract_like_head(saved: SavedHead, inputs: Sequence[str | os.PathLike], cache: str | os.PathLike = "cache", *,
                      pretrained: str | None = None, config: RunConfig | None = None) -> FeatureSet:
    """The complete feature set of ``inputs`` (files, folders, list files) extracted exactly like the head's
    training features (backbone, weights, preprocessing, view); `attrib predict` and `attrib enroll` read
    their images through it, so both see the features the head was trained on."""
    try:
        images = collect_images(inputs)
    except CatalogError as exc:
        raise PredictError(str(exc)) from None
    backbone = head_backbone(saved, pretrained)
    view = View.parse(saved.manifest.view or "none")
    summary = extract(images, backbone, cache, SUBSET, view, config or RunConfig(),
                      manifest_extra={"dataset_kind": SUBSET})
    fs = summary.feature_set
    fs.require_complete()
    return fs


def predict(saved: SavedHead, inputs: Sequence[str | os.PathLike], out: str | os.PathLike, *,
            cache: str | os.PathLike = "cache", fmt: str = "csv", threshold: float | None = None, top_k: int = 3,
            pretrained: str | None = None, config: RunConfig | None = None) -> Prediction:
    """Extract features for ``inputs`` like the head's training features, apply head and score, write rows."""
    if top_k < 1:
        raise PredictError(f"--top-k must be >= 1, got {top_k}")
    _check_format(fmt)  # before extracting, not after
    out = check_out(out)
    fs = extract_like_head(saved, inputs, cache, pretrained=pretrained, config=config)
    k = min(top_k, len(saved.classes))
    n, failed, unknown = write_predictions(_records(saved, fs, k, threshold), out, fmt, k)
    return Prediction(fs, n, failed, unknown, out)
